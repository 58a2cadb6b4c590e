package throttler

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// frenoMode is how the fake Freno answers.
type frenoMode int32

const (
	frenoNormal    frenoMode = iota
	frenoSlow                // no answer until the client gives up
	frenoHangUp              // hijack the connection and close it
	frenoGarbage             // reply with something that is not HTTP
	frenoTruncated           // a 200 or other status whose body is cut off
	frenoSlowBody            // the status at once, then a body that stalls
)

// fakeFreno is an httptest server that speaks Freno's status codes, on a
// loopback TCP port (newFakeFreno) or on an in-memory network
// (newMemFreno).
type fakeFreno struct {
	*httptest.Server
	mem      *memListener // nil on TCP
	tr       *http.Transport
	path     string
	status   atomic.Int32
	body     atomic.Pointer[string] // sent on GET when non-empty
	mode     atomic.Int32
	requests atomic.Int64
	newConns atomic.Int64
	closed   atomic.Int64

	mu       sync.Mutex
	lastReq  *http.Request // method, headers and host of the last request
	stopSlow chan struct{}
}

func newFakeFreno(t *testing.T, status int) *fakeFreno { return startFakeFreno(t, status, nil) }

// newMemFreno is a fake Freno for a synctest bubble: its server and the
// transport of client() talk over net.Pipe, whose every wait is a channel
// wait, which the bubble sees as durably blocked. On TCP an idle pooled
// connection waits in a socket read, which it does not, so the fake clock
// would never move.
func newMemFreno(t *testing.T, status int) *fakeFreno {
	return startFakeFreno(t, status, &memListener{conns: make(chan net.Conn), done: make(chan struct{})})
}

func startFakeFreno(t *testing.T, status int, mem *memListener) *fakeFreno {
	t.Helper()
	f := &fakeFreno{path: "/check/myapp/mysql/main", stopSlow: make(chan struct{}), mem: mem}
	f.status.Store(int32(status))
	if mem == nil {
		f.Server = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	} else {
		f.Server = &httptest.Server{Listener: mem, Config: &http.Server{Handler: http.HandlerFunc(f.serve)}}
		f.tr = &http.Transport{DialContext: mem.dial}
	}
	f.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			f.newConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			f.closed.Add(1)
		}
	}
	f.Start()
	t.Cleanup(func() {
		close(f.stopSlow)
		f.Close()
		if f.tr != nil {
			f.tr.CloseIdleConnections()
		}
	})
	return f
}

// client is a client of the caller's own on the in-memory network.
func (f *fakeFreno) client() *http.Client { return &http.Client{Transport: f.tr} }

// memListener is the server's end of the in-memory network: each dial is a
// net.Pipe whose other end Accept returns.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

// dial connects to the listener; once it is closed, a dial is refused as
// by a port nobody listens on.
func (l *memListener) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
	}
	_ = client.Close()
	_ = server.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, &net.OpError{Op: "dial", Net: network, Addr: memAddr{}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "freno.test" }

func (f *fakeFreno) url() string { return f.URL + f.path }

func (f *fakeFreno) setBody(s string) { f.body.Store(&s) }

func (f *fakeFreno) last() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReq
}

func (f *fakeFreno) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	f.mu.Lock()
	f.lastReq = r.Clone(context.Background())
	f.mu.Unlock()
	code := int(f.status.Load())
	switch frenoMode(f.mode.Load()) {
	case frenoSlow:
		select {
		case <-r.Context().Done(): // the client gave up and closed the connection
		case <-f.stopSlow:
		}
		return
	case frenoHangUp:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	case frenoGarbage:
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_, _ = buf.WriteString("SSH-2.0-OpenSSH_9.6\r\n\r\n")
			_ = buf.Flush()
			_ = conn.Close()
		}
		return
	case frenoTruncated:
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"StatusCode":`)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // closes the connection mid-body
	case frenoSlowBody:
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"StatusCode":`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-f.stopSlow:
		}
		return
	}
	body := ""
	if p := f.body.Load(); p != nil {
		body = *p
	}
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// newTestHTTP returns an unopened HTTP throttler on url, closed at the end
// of the test. It polls every hour unless opts say otherwise: tests drive it
// with UpdateLag.
func newTestHTTP(t *testing.T, cfg HTTPConfig, opts ...Option) *HTTP {
	t.Helper()
	h, err := NewHTTP(cfg, nil, append([]Option{WithInterval(time.Hour), WithMaxWait(0)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func TestNewHTTPRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  HTTPConfig
		opts []Option
		want string
	}{
		{"empty URL", HTTPConfig{}, nil, "HTTPConfig.URL is empty"},
		{"relative URL", HTTPConfig{URL: "/check/myapp/mysql/main"}, nil, `HTTPConfig.URL "/check/myapp/mysql/main" is not an absolute URL with a host`},
		{"no host", HTTPConfig{URL: "freno:8111/check"}, nil, "is not an absolute URL with a host"},
		{"bad scheme", HTTPConfig{URL: "ftp://freno/check"}, nil, `scheme "ftp" is not http or https`},
		{"fragment", HTTPConfig{URL: "http://freno/#/check/myapp/mysql/main"}, nil, `has a fragment (#...), which is never sent`},
		{"unparseable URL", HTTPConfig{URL: "http://freno:port/check"}, nil, `HTTPConfig.URL "http://freno:port/check"`},
		{"unsupported method", HTTPConfig{URL: "http://freno/check", Method: "POST"}, nil, `HTTPConfig.Method "POST" is not HEAD or GET`},
		{"bad option", HTTPConfig{URL: "http://freno/check"}, []Option{WithInterval(0)}, "WithInterval(0s)"},
		{"lag source", HTTPConfig{URL: "http://freno/check"}, []Option{WithLagSource(&fakeSource{})}, "WithLagSource does not apply"},
		{"two problems", HTTPConfig{Method: "PUT"}, []Option{WithMaxWait(-1)}, "WithMaxWait(-1ns)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := NewHTTP(c.cfg, nil, c.opts...)
			assert.Nil(t, h)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
		})
	}
	h, err := NewHTTP(HTTPConfig{URL: "HTTPS://freno/check", Method: "get"}, nil)
	require.NoError(t, err, "scheme and method are case-insensitive")
	assert.Equal(t, http.MethodGet, h.method)
	h, err = NewHTTP(HTTPConfig{URL: "http://freno/check"}, nil)
	require.NoError(t, err)
	assert.Equal(t, http.MethodHead, h.method, "HEAD by default")
	assert.True(t, h.ownClient)
	assert.Zero(t, h.client.Timeout, "no overall timeout: WithQueryTimeout bounds each request")
	require.NoError(t, h.Close(), "Close before Open")
}

func TestFrenoURL(t *testing.T) {
	assert.Equal(t, "http://freno:8111/check/myapp/mysql/main", FrenoURL("http://freno:8111", "myapp", "mysql", "main"))
	assert.Equal(t, "http://freno:8111/check/my%20app/mysql/main%2F1", FrenoURL("http://freno:8111/", "my app", "mysql", "main/1"))
	assert.Equal(t, "http://freno:8111/check/myapp/mysql/main?token=x", FrenoURL("http://freno:8111/?token=x", "myapp", "mysql", "main"), "the query stays a query")
	assert.Equal(t, "https://u:p@lb/freno/check/myapp/mysql/main?a=1&b=2", FrenoURL("https://u:p@lb/freno/?a=1&b=2", "myapp", "mysql", "main"), "under the base's path")

	// What cannot be a check URL is rejected by NewHTTP, naming the problem.
	for base, want := range map[string]string{
		"http://freno:8111/#top": "has a fragment",
		"freno:8111":             "is not an absolute URL with a host",
		"/freno":                 "is not an absolute URL with a host",
		"":                       "is not an absolute URL with a host",
		"ftp://freno":            `scheme "ftp" is not http or https`,
		"http://freno:port":      "invalid port",
	} {
		_, err := NewHTTP(HTTPConfig{URL: FrenoURL(base, "myapp", "mysql", "main")}, nil)
		assert.ErrorIs(t, err, ErrInvalidConfig, base)
		assert.ErrorContains(t, err, want, base)
	}
}

// TestFrenoURLKeepsTheToken: the request for a base with a query goes to
// the check's path with the query, not to the base's path.
func TestFrenoURLKeepsTheToken(t *testing.T) {
	f := newFakeFreno(t, 429)
	h := newTestHTTP(t, HTTPConfig{URL: FrenoURL(f.URL+"/?token=x", "myapp", "mysql", "main")})
	require.NoError(t, h.Open(context.Background()))
	assert.True(t, h.IsThrottled())
	assert.Equal(t, f.path, f.last().URL.Path)
	assert.Equal(t, "token=x", f.last().URL.RawQuery)
}

// TestHTTPStatusMapping: 200 clears; every other status throttles at once,
// with Freno's meaning and, on GET, the body's message and values.
func TestHTTPStatusMapping(t *testing.T) {
	const (
		thresholdBody = `{"StatusCode":429,"Value":2.5,"Threshold":1,"Message":"Threshold exceeded"}`
		deniedBody    = `{"StatusCode":417,"Value":0,"Threshold":0,"Message":"App denied"}`
		noMetricBody  = `{"StatusCode":404,"Value":0,"Threshold":0,"Message":"No such metric"}`
		errorBody     = `{"StatusCode":500,"Value":0,"Threshold":0,"Message":"metric not collected yet"}`
		okBody        = `{"StatusCode":200,"Value":0.43,"Threshold":1,"Message":""}`
	)
	cases := []struct {
		method string
		status int
		body   string
		want   string // "" for clear
	}{
		{"HEAD", 200, "", ""},
		{"HEAD", 429, thresholdBody, "429 Too Many Requests: threshold exceeded"}, // HEAD carries no body
		{"HEAD", 417, "", "417 Expectation Failed: app denied"},
		{"HEAD", 404, "", "404 Not Found: no such metric"},
		{"HEAD", 500, "", "500 Internal Server Error"},
		{"HEAD", 503, "", "503 Service Unavailable"},
		{"GET", 200, okBody, ""},
		{"GET", 200, "", ""},
		{"GET", 429, thresholdBody, "429 Too Many Requests: threshold exceeded (value 2.5, threshold 1)"},
		{"GET", 429, "", "429 Too Many Requests: threshold exceeded"},
		{"GET", 417, deniedBody, "417 Expectation Failed: app denied"},
		{"GET", 404, noMetricBody, "404 Not Found: no such metric"},
		{"GET", 404, "404 page not found\n", "404 Not Found: no such metric: 404 page not found"},
		{"GET", 500, errorBody, "500 Internal Server Error: metric not collected yet"},
		{"GET", 500, "", "500 Internal Server Error"},
		{"GET", 502, "<html>\n<b>Bad Gateway</b>\n</html>", "502 Bad Gateway: <html> <b>Bad Gateway</b> </html>"},
		{"GET", 302, "", "302 Found"}, // a redirect without Location is not followed
	}
	for _, c := range cases {
		name := c.method + " " + http.StatusText(c.status)
		if c.body != "" {
			name += " with body"
		}
		t.Run(name, func(t *testing.T) {
			f := newFakeFreno(t, c.status)
			f.setBody(c.body)
			h := newTestHTTP(t, HTTPConfig{URL: f.url(), Method: c.method})
			require.NoError(t, h.Open(context.Background()), "a refusal is an answer, not an Open error")
			assert.Equal(t, c.method, f.last().Method)
			if c.want == "" {
				assert.False(t, h.IsThrottled())
				assert.Empty(t, h.ThrottleReason())
			} else {
				assert.True(t, h.IsThrottled())
				assert.Equal(t, "HTTP check "+f.url()+": "+c.want, h.ThrottleReason())
			}
			assert.NoError(t, h.UpdateLag(context.Background()), "answers are observations, not errors")
		})
	}
}

func TestHTTPSendsHeadersAndHost(t *testing.T) {
	f := newFakeFreno(t, 200)
	hdr := http.Header{"Authorization": {"Bearer s3cret"}, "Host": {"freno.internal"}}
	h := newTestHTTP(t, HTTPConfig{URL: f.url(), Header: hdr})
	require.NoError(t, h.Open(context.Background()))
	r := f.last()
	assert.Equal(t, "Bearer s3cret", r.Header.Get("Authorization"))
	assert.Equal(t, "freno.internal", r.Host)
	assert.Equal(t, "freno.internal", hdr.Get("Host"), "the caller's header is not modified")
}

// requireStaleAfter lets window pass in a bubble, from the instant of h's
// last answer, with probes failing meanwhile: h is clear until the last
// instant of the window, and throttled at its end.
func requireStaleAfter(t *testing.T, h *HTTP, window time.Duration) {
	t.Helper()
	time.Sleep(window - time.Nanosecond)
	synctest.Wait()
	require.False(t, h.IsThrottled(), "the last answer stands for the stale window")
	time.Sleep(time.Nanosecond)
	synctest.Wait()
	require.True(t, h.IsThrottled(), "no answer throttles after the stale window")
}

// TestHTTPSlowServerGoesStaleAndRecovers: a server that does not answer
// within the query timeout leaves the last answer standing for the stale
// window, then throttles with the error; an answer clears it again.
func TestHTTPSlowServerGoesStaleAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newMemFreno(t, 200)
		h := newTestHTTP(t, HTTPConfig{URL: f.url(), Client: f.client()}, WithInterval(minPeriod), WithQueryTimeout(10*time.Millisecond), WithStaleAfter(30*time.Millisecond))
		require.NoError(t, h.Open(context.Background()))
		require.False(t, h.IsThrottled())

		f.mode.Store(int32(frenoSlow))
		requireStaleAfter(t, h, 30*time.Millisecond)
		assert.Contains(t, h.ThrottleReason(), "no answer for")
		assert.Contains(t, h.ThrottleReason(), "context deadline exceeded")
		err := h.UpdateLag(context.Background())
		assert.ErrorIs(t, err, context.DeadlineExceeded, "UpdateLag returns the cause, wrapped")
		done := contractWaiters(context.Background(), h, 20)
		time.Sleep(3 * minPeriod)
		require.False(t, returned(done), "slow server")

		f.mode.Store(int32(frenoNormal))
		time.Sleep(10*time.Millisecond + minPeriod) // the probe in flight times out; the next is answered
		assert.True(t, returned(done), "server answers again")
		assert.False(t, h.IsThrottled())
	})
}

// TestHTTPBrokenConnections: connections closed without an answer, or
// answered with something that is not HTTP, are failures to read: stale,
// then throttled with the error; recovery clears.
func TestHTTPBrokenConnections(t *testing.T) {
	for _, c := range []struct {
		name string
		mode frenoMode
		want string
	}{
		{"hang up", frenoHangUp, "EOF"},
		{"not HTTP", frenoGarbage, "malformed HTTP"},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newMemFreno(t, 200)
				h := newTestHTTP(t, HTTPConfig{URL: f.url(), Client: f.client()}, WithInterval(minPeriod), WithQueryTimeout(200*time.Millisecond), WithStaleAfter(300*time.Millisecond))
				require.NoError(t, h.Open(context.Background()))
				f.mode.Store(int32(c.mode))
				assert.ErrorContains(t, h.UpdateLag(context.Background()), c.want)
				assert.False(t, h.IsThrottled(), "one failure is not an answer: the last answer stands for the stale window")
				requireStaleAfter(t, h, 300*time.Millisecond)
				assert.Contains(t, h.ThrottleReason(), "no answer for")
				assert.Contains(t, h.ThrottleReason(), c.want)

				f.mode.Store(int32(frenoNormal))
				time.Sleep(minPeriod)
				synctest.Wait()
				require.False(t, h.IsThrottled(), "the next answer clears")
			})
		})
	}
}

// TestHTTPTruncatedBody: the status is the answer even when the body is
// cut off: 200 clears, any other status throttles, without its message.
func TestHTTPTruncatedBody(t *testing.T) {
	f := newFakeFreno(t, 200)
	f.mode.Store(int32(frenoTruncated))
	h := newTestHTTP(t, HTTPConfig{URL: f.url(), Method: "GET"})
	require.NoError(t, h.Open(context.Background()))
	assert.False(t, h.IsThrottled())

	f.status.Store(429)
	require.NoError(t, h.UpdateLag(context.Background()))
	assert.True(t, h.IsThrottled(), "a refusal throttles at once even with a broken body")
	assert.Equal(t, "HTTP check "+f.url()+": 429 Too Many Requests: threshold exceeded", h.ThrottleReason())
}

// TestHTTPSlowBodyIsStillAnAnswer: a refusal whose body stalls opens
// throttled, at once rather than at the query timeout; so does a 200 clear.
func TestHTTPSlowBodyIsStillAnAnswer(t *testing.T) {
	for _, status := range []int{429, 200} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			f := newFakeFreno(t, status)
			f.mode.Store(int32(frenoSlowBody))
			h := newTestHTTP(t, HTTPConfig{URL: f.url(), Method: "GET"}, WithQueryTimeout(time.Minute))
			start := time.Now()
			require.NoError(t, h.Open(context.Background()), "a status is an answer")
			assert.Less(t, time.Since(start), 10*time.Second, "the body does not hold the answer up to the query timeout")
			assert.Equal(t, status != 200, h.IsThrottled())
			if status != 200 {
				assert.Equal(t, "HTTP check "+f.url()+": 429 Too Many Requests: threshold exceeded", h.ThrottleReason())
			}
			require.NoError(t, h.UpdateLag(context.Background()))
		})
	}
}

// TestHTTPServerGoesAway: a server that disappears is stale, then throttled;
// an Open against it fails.
func TestHTTPServerGoesAway(t *testing.T) {
	// A port nobody listens on, for real: Open's error. No clock needed.
	gone := newFakeFreno(t, 200)
	gone.Close()
	h := newTestHTTP(t, HTTPConfig{URL: gone.url()})
	err := h.Open(context.Background())
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, "connection refused")
	assert.False(t, h.IsThrottled(), "false after a failed Open")

	// Staleness on the fake clock, where the in-memory network refuses
	// dials once its server is closed.
	synctest.Test(t, func(t *testing.T) {
		f := newMemFreno(t, 200)
		h := newTestHTTP(t, HTTPConfig{URL: f.url(), Client: f.client()}, WithInterval(minPeriod), WithQueryTimeout(200*time.Millisecond), WithStaleAfter(300*time.Millisecond))
		require.NoError(t, h.Open(context.Background()))
		f.Close()
		requireStaleAfter(t, h, 300*time.Millisecond)
		assert.Contains(t, h.ThrottleReason(), "no answer for")
		assert.Contains(t, h.ThrottleReason(), "connection refused")
		assert.NotContains(t, h.ThrottleReason(), "context deadline exceeded", "a refused connection fails fast")
	})
}

// TestHTTPReusesConnectionsAndClosesThem: drained bodies let one connection
// serve every check, HEAD or GET, 200 or 429; Close closes it.
func TestHTTPReusesConnectionsAndClosesThem(t *testing.T) {
	for _, method := range []string{"HEAD", "GET"} {
		t.Run(method, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newMemFreno(t, 200)
				f.setBody(`{"StatusCode":429,"Value":2.5,"Threshold":1,"Message":"Threshold exceeded"}` + strings.Repeat(" ", 8<<10))
				h := newTestHTTP(t, HTTPConfig{URL: f.url(), Method: method}, WithInterval(minPeriod), WithQueryTimeout(time.Second), WithStaleAfter(time.Hour))
				// The client NewHTTP built, which Close is to close, dialing
				// the in-memory network.
				require.True(t, h.ownClient)
				h.client.Transport.(*http.Transport).DialContext = f.mem.dial
				require.NoError(t, h.Open(context.Background()))
				for i := range 20 {
					if i%2 == 0 {
						f.status.Store(429)
					} else {
						f.status.Store(200)
					}
					require.NoError(t, h.UpdateLag(context.Background()))
				}
				time.Sleep(10 * minPeriod)
				synctest.Wait()
				assert.EqualValues(t, 1+20+10, f.requests.Load(), "Open's, the updates', and the monitor's every interval")
				assert.EqualValues(t, 1, f.newConns.Load(), "one connection for every check")
				require.NoError(t, h.Close())
				synctest.Wait()
				assert.EqualValues(t, 1, f.closed.Load(), "Close closes the idle connection of its own client")
			})
		})
	}
}

// TestHTTPCallerClientIsTheCallers: a client given in the config is used and
// left open.
func TestHTTPCallerClientIsTheCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newMemFreno(t, 200)
		h := newTestHTTP(t, HTTPConfig{URL: f.url(), Client: f.client()})
		require.NoError(t, h.Open(context.Background()))
		require.NoError(t, h.Close())
		synctest.Wait()
		assert.EqualValues(t, 1, f.requests.Load(), "the caller's client asked")
		assert.Zero(t, f.closed.Load(), "the caller's idle connection is the caller's to close")
		f.tr.CloseIdleConnections()
		synctest.Wait()
		assert.EqualValues(t, 1, f.closed.Load(), "closed by the caller")
	})
}

// TestHTTPLogsChangesOnly: a steady refusal over many checks is one line.
func TestHTTPLogsChangesOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newMemFreno(t, 429)
		var buf syncBuffer
		h, err := NewHTTP(HTTPConfig{URL: f.url(), Client: f.client()}, slog.New(slog.NewTextHandler(&buf, nil)),
			WithInterval(minPeriod), WithQueryTimeout(time.Second), WithStaleAfter(time.Hour))
		require.NoError(t, err)
		require.NoError(t, h.Open(context.Background()))
		time.Sleep(20 * minPeriod)
		synctest.Wait()
		require.EqualValues(t, 21, f.requests.Load(), "Open's and twenty refusals more")
		f.status.Store(200)
		time.Sleep(minPeriod)
		synctest.Wait()
		require.False(t, h.IsThrottled())
		require.NoError(t, h.Close())
		out := buf.String()
		assert.Equal(t, 1, strings.Count(out, "throttler: throttled"), out)
		assert.Equal(t, 1, strings.Count(out, "throttler: resumed"), out)
		assert.Contains(t, out, "url="+f.url())
	})
}

func TestHTTPMaxWait(t *testing.T) {
	f := newFakeFreno(t, 429)
	h := newTestHTTP(t, HTTPConfig{URL: f.url()}, WithMaxWait(5*time.Millisecond))
	require.NoError(t, h.Open(context.Background()))
	err := h.Wait(context.Background())
	assert.ErrorIs(t, err, ErrMaxWait)
	assert.ErrorContains(t, err, "429 Too Many Requests")
	require.NoError(t, h.Close())
	assert.ErrorIs(t, h.Wait(context.Background()), ErrClosed)
	assert.ErrorIs(t, h.UpdateLag(context.Background()), ErrClosed)
}

func TestHTTPHotPathDoesNotAllocate(t *testing.T) {
	f := newFakeFreno(t, 200)
	h := newTestHTTP(t, HTTPConfig{URL: f.url()})
	require.NoError(t, h.Open(context.Background()))
	ctx := context.Background()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = h.IsThrottled() }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { h.BlockWait(ctx) }))
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = h.ThrottleReason() }))
}
