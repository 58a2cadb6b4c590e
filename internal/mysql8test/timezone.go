package mysql8test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	gms "github.com/dolthub/go-mysql-server/sql"
	"github.com/dolthub/go-mysql-server/sql/expression/function"
	"github.com/dolthub/go-mysql-server/sql/types"
	"github.com/shopspring/decimal"
)

// ZoneOffset is one period of a time zone: its abbreviation, offset from UTC,
// and whether it is daylight-saving time.
type ZoneOffset struct {
	Abbr   string
	Offset time.Duration // whole seconds
	DST    bool
}

// Offsets of America/New_York, for TransitionZone.
var (
	EST = ZoneOffset{Abbr: "EST", Offset: -5 * time.Hour}
	EDT = ZoneOffset{Abbr: "EDT", Offset: -4 * time.Hour, DST: true}
)

// TransitionZone returns a time zone named name that is before until at
// (truncated to the second) and after from then on: a daylight-saving switch
// at an instant the test chooses, for example a second before now.
// TransitionZone("NY", at, EST, EDT) springs forward at at, with EDT and EST
// swapped it falls back.
func TransitionZone(name string, at time.Time, before, after ZoneOffset) *time.Location {
	// A version 1 TZif file (RFC 8536) with one transition: the header,
	// its six counts, the transition time, the type it switches to, the two
	// local time types and their abbreviations. Before the first
	// transition, Go uses the first type, which no transition uses.
	var abbrs bytes.Buffer
	var types bytes.Buffer
	for _, z := range []ZoneOffset{before, after} {
		dst := byte(0)
		if z.DST {
			dst = 1
		}
		_ = binary.Write(&types, binary.BigEndian, int32(z.Offset/time.Second))
		types.WriteByte(dst)
		types.WriteByte(byte(abbrs.Len()))
		abbrs.WriteString(z.Abbr)
		abbrs.WriteByte(0)
	}
	var b bytes.Buffer
	b.WriteString("TZif")
	b.Write(make([]byte, 16)) // version 1, reserved
	for _, n := range []uint32{0, 0, 0, 1, 2, uint32(abbrs.Len())} {
		// isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
		_ = binary.Write(&b, binary.BigEndian, n)
	}
	_ = binary.Write(&b, binary.BigEndian, int32(at.Unix()))
	b.WriteByte(1) // the transition switches to type 1 (after)
	b.Write(types.Bytes())
	b.Write(abbrs.Bytes())
	loc, err := time.LoadLocationFromTZData(name, b.Bytes())
	if err != nil {
		panic(fmt.Sprintf("mysql8test: TransitionZone: %v", err))
	}
	return loc
}

// wallToInstant is the instant that the wall clock w (its fields; its
// location is ignored) shows in loc. A wall clock shown twice, in the hour
// repeated after a fall-back switch, is the earlier instant; one skipped by
// a spring-forward switch is whatever time.Date makes of it.
func wallToInstant(w time.Time, loc *time.Location) time.Time {
	naive := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), time.UTC)
	const layout = "2006-01-02 15:04:05.999999999"
	want := naive.Format(layout)
	var best time.Time
	found := false
	// Every offset in effect within a day of w: no zone switches more
	// often than that.
	for _, probe := range []time.Duration{-26 * time.Hour, 0, 26 * time.Hour} {
		_, off := naive.Add(probe).In(loc).Zone()
		cand := naive.Add(-time.Duration(off) * time.Second)
		if cand.In(loc).Format(layout) == want && (!found || cand.Before(best)) {
			best, found = cand, true
		}
	}
	if !found {
		return time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), loc)
	}
	return best
}

// --- functions the emulator answers itself ---

// functions returns the functions that replace go-mysql-server's for e.
func (e *Emulator) functions() map[string]gms.Function {
	now := func(args ...gms.Expression) (gms.Expression, error) {
		n, err := function.NewNow(args...)
		if err != nil {
			return nil, err
		}
		return &emuNow{Now: n.(*function.Now), e: e}, nil
	}
	fns := map[string]gms.Function{
		"unix_timestamp": gms.FunctionN{Name: "unix_timestamp", Fn: func(args ...gms.Expression) (gms.Expression, error) {
			u, err := function.NewUnixTimestamp(args...)
			if err != nil {
				return nil, err
			}
			return &emuUnixTimestamp{UnixTimestamp: u.(*function.UnixTimestamp), e: e}, nil
		}},
	}
	for _, name := range []string{"now", "current_timestamp", "localtime", "localtimestamp"} {
		fns[name] = gms.FunctionN{Name: name, Fn: now}
	}
	return fns
}

// systemTimeZone reports whether the session's time_zone is SYSTEM, the
// emulator's own zone.
func systemTimeZone(ctx *gms.Context) bool {
	v, err := ctx.GetSessionVariable(ctx, "time_zone")
	s, _ := v.(string)
	return err == nil && strings.EqualFold(s, "SYSTEM")
}

// emuNow is NOW([fsp]) and its synonyms: the statement's start as a wall
// clock in the emulator's time zone while the session's time_zone is SYSTEM
// (go-mysql-server uses the process's local zone), else go-mysql-server's.
type emuNow struct {
	*function.Now
	e *Emulator
}

func (n *emuNow) Eval(ctx *gms.Context, row gms.Row) (any, error) {
	fsp := int64(0)
	if c := n.Children(); len(c) == 1 {
		v, err := c[0].Eval(ctx, row)
		if err != nil {
			return nil, err
		}
		p, ok := types.CoalesceInt(v)
		if !ok || p < 0 || p > 6 {
			return n.Now.Eval(ctx, row) // its error
		}
		fsp = int64(p)
	}
	if !systemTimeZone(ctx) {
		return n.Now.Eval(ctx, row)
	}
	t := ctx.QueryTime().In(n.e.loc)
	unit := int(time.Second)
	for i := int64(0); i < fsp; i++ {
		unit /= 10
	}
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond()/unit*unit, time.UTC), nil
}

func (n *emuNow) WithChildren(children ...gms.Expression) (gms.Expression, error) {
	x, err := function.NewNow(children...)
	if err != nil {
		return nil, err
	}
	return &emuNow{Now: x.(*function.Now), e: n.e}, nil
}

// emuUnixTimestamp is UNIX_TIMESTAMP([date]). For a TIMESTAMP or DATETIME
// argument, while the session's time_zone is SYSTEM, it converts the wall
// clock with the offset of the emulator's zone at that instant. (MySQL reads
// a TIMESTAMP column's stored instant. go-mysql-server v0.20.0 stores wall
// clocks, and converts every one with the zone's current offset: an hour off
// for a timestamp from the other side of a daylight-saving switch.)
// Otherwise, and without an argument, it is go-mysql-server's.
type emuUnixTimestamp struct {
	*function.UnixTimestamp
	e *Emulator
}

func (u *emuUnixTimestamp) Eval(ctx *gms.Context, row gms.Row) (any, error) {
	c := u.Children()
	if len(c) != 1 || !systemTimeZone(ctx) {
		return u.UnixTimestamp.Eval(ctx, row)
	}
	if _, ok := c[0].Type().(gms.DatetimeType); !ok {
		return u.UnixTimestamp.Eval(ctx, row)
	}
	v, err := c[0].Eval(ctx, row)
	if err != nil || v == nil {
		return nil, err
	}
	w, ok := v.(time.Time)
	if !ok {
		return u.UnixTimestamp.Eval(ctx, row)
	}
	micros := wallToInstant(w, u.e.loc).UnixMicro()
	switch {
	case micros > function.MaxUnixTimeMicroSecs:
		return int64(0), nil // out of range, as MySQL
	case micros < 1e6:
		return u.Type().Zero(), nil // the zero timestamp: 0
	}
	dt, ok := u.Type().(gms.DecimalType)
	if !ok {
		return micros / 1e6, nil
	}
	scale := int32(dt.Scale())
	for i := scale; i < 6; i++ {
		micros /= 10
	}
	return decimal.New(micros, -scale), nil
}

func (u *emuUnixTimestamp) WithChildren(children ...gms.Expression) (gms.Expression, error) {
	x, err := function.NewUnixTimestamp(children...)
	if err != nil {
		return nil, err
	}
	return &emuUnixTimestamp{UnixTimestamp: x.(*function.UnixTimestamp), e: u.e}, nil
}

// emuProvider is the emulator's database provider: go-mysql-server's
// in-memory one, which the engine asks for functions before its built-ins.
type emuProvider struct {
	*memoryProvider
	fns map[string]gms.Function
}

func (p emuProvider) Function(_ *gms.Context, name string) (gms.Function, bool) {
	f, ok := p.fns[strings.ToLower(name)]
	return f, ok
}
