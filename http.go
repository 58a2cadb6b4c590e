package throttler

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/throttlekit/throttler/internal/poller"
)

// HTTP throttles while a central throttling service says no: it asks an HTTP
// endpoint, Freno-compatible by default (https://github.com/github/freno),
// whether the app may write.
//
// It asks every WithInterval, one request at a time, each bounded by
// WithQueryTimeout. The answer is the status code:
//
//   - 200 OK: go;
//   - any other status (Freno's 429 "threshold exceeded", 417 "app denied",
//     404 "no such metric", a 5xx, a proxy's 502...): throttled at once, with
//     the status and, on GET, the body's message in ThrottleReason;
//   - the status decides: a body that stalls or breaks off costs only its
//     message (it is given a fraction of a second, then dropped);
//   - no answer (connection refused or reset, a timeout, a malformed
//     response): the last answer stands for WithStaleAfter, then the
//     throttler throttles with the error in its reason, until an answer
//     arrives again.
//
// Most callers need only NewHTTP (often with FrenoURL), Open, BlockWait
// before each chunk, and Close.
type HTTP struct {
	name      string                     // WithName's, or ""
	target    atomic.Pointer[httpTarget] // the URL the next request goes to
	method    string
	client    *http.Client
	ownClient bool // built by NewHTTP: Close closes its idle connections
	header    http.Header
	host      string // a Host header, which net/http takes from Request.Host
	log       *slog.Logger
	polling
}

// httpTarget is a URL to ask: as given (requests use it), and with any
// password redacted, for reasons and logs.
type httpTarget struct{ url, shown string }

// httpParseURL checks what may be a check URL; field names it in errors.
func httpParseURL(field, s string) (*httpTarget, error) {
	if s == "" {
		return nil, fmt.Errorf("%s is empty", field)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", field, s, err)
	}
	if problem := httpURLProblem(u); problem != "" {
		return nil, fmt.Errorf("%s %q%s", field, u.Redacted(), problem)
	}
	return &httpTarget{url: s, shown: u.Redacted()}, nil
}

// HTTPConfig says which endpoint an HTTP throttler asks and how.
type HTTPConfig struct {
	// URL is the absolute http or https URL to ask, for example
	// FrenoURL("http://freno:8111", "myapp", "mysql", "main"). Required.
	URL string
	// Method is "HEAD" (the default, as Freno recommends for clients) or
	// "GET", whose response body (the first 4 KiB of a refusal's)
	// supplies the message in ThrottleReason: Freno's JSON CheckResult, or
	// plain text.
	Method string
	// Client makes the requests. The default is a client of its own with
	// no overall timeout (WithQueryTimeout bounds each request); Close
	// closes its idle connections. A Client given here is the caller's to
	// close.
	Client *http.Client
	// Header is sent with every request, for example an Authorization
	// header. A "Host" entry sets the request's Host.
	Header http.Header
}

// FrenoURL returns the URL of Freno's check for app writing to the store
// storeType/storeName, for example
// FrenoURL("http://freno:8111", "myapp", "mysql", "main") is
// "http://freno:8111/check/myapp/mysql/main". Each name is escaped as one
// path segment, appended to base's path; base's query (a token, say) is kept:
// FrenoURL("http://f:8111/?token=x", ...) is "http://f:8111/check/...?token=x".
//
// A base that cannot be a check URL (not a URL, no scheme or host, a scheme
// other than http or https, a fragment) is returned with the check's path
// appended as text, which NewHTTP rejects with an error wrapping
// ErrInvalidConfig that names the problem: FrenoURL returns no error so that
// it fits in an HTTPConfig literal.
func FrenoURL(base, app, storeType, storeName string) string {
	check := "check/" + url.PathEscape(app) + "/" + url.PathEscape(storeType) + "/" + url.PathEscape(storeName)
	u, err := url.Parse(base)
	if err != nil || httpURLProblem(u) != "" {
		return strings.TrimRight(base, "/") + "/" + check // NewHTTP says what is wrong
	}
	escaped := strings.TrimSuffix(u.EscapedPath(), "/") + "/" + check
	path, err := url.PathUnescape(escaped)
	if err != nil { // unreachable: EscapedPath and PathEscape escape validly
		return strings.TrimRight(base, "/") + "/" + check
	}
	u.Path, u.RawPath = path, escaped
	return u.String()
}

// httpURLProblem says why u cannot be a check URL, or "": a phrase to follow
// the URL in an error.
func httpURLProblem(u *url.URL) string {
	switch {
	case !u.IsAbs() || u.Host == "":
		return " is not an absolute URL with a host"
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf(": scheme %q is not http or https", u.Scheme)
	case u.Fragment != "":
		return " has a fragment (#...), which is never sent: the check goes in the path"
	}
	return ""
}

const (
	// httpMaxMessage bounds what a GET reads as the message: a check's
	// answer is a status code and a short JSON object.
	httpMaxMessage = 4 << 10
	// httpMaxDrain bounds what is read past the message so that the
	// connection can be reused; a larger body costs a new connection, not
	// an unbounded read.
	httpMaxDrain = 64 << 10
	// httpBodyWait bounds the reading of a body once the status is in
	// (within WithQueryTimeout): a check's body is sent with its headers,
	// so one that takes longer is stalled, and a stalled body costs its
	// message and the connection, never the answer.
	httpBodyWait = 250 * time.Millisecond
)

// NewHTTP returns a throttler that asks cfg.URL. It does no I/O; Open does.
// A nil logger logs nothing. Bad input (a missing or relative URL, a scheme
// other than http or https, a fragment, a method other than HEAD or GET, an
// option out of range) is an error wrapping ErrInvalidConfig.
func NewHTTP(cfg HTTPConfig, logger *slog.Logger, opts ...Option) (*HTTP, error) {
	var errs []error
	target, err := httpParseURL("HTTPConfig.URL", cfg.URL)
	if err != nil {
		errs = append(errs, err)
	}
	method := strings.ToUpper(cfg.Method)
	switch method {
	case "":
		method = http.MethodHead
	case http.MethodHead, http.MethodGet:
	default:
		errs = append(errs, fmt.Errorf("HTTPConfig.Method %q is not HEAD or GET", cfg.Method))
	}
	o, problems := buildOptions(opts, "an HTTP throttler", pollingOptions)
	if err := configError(append(errs, problems...)); err != nil {
		return nil, err
	}
	logger = o.logger(logger) // WithName's name on every line
	h := &HTTP{name: o.name, method: method, client: cfg.Client, header: cfg.Header.Clone()}
	h.target.Store(target)
	if h.client == nil {
		h.ownClient = true
		h.client = &http.Client{Transport: httpNewTransport()}
	}
	if host := h.header.Get("Host"); host != "" {
		h.host = host
		h.header.Del("Host")
	}
	h.log = logger.With("url", target.shown) // NewHTTP's: SetURL logs the new one
	h.polling = polling{poll: poller.New(o.pollerConfig(h.log, "answer", "HTTP"), h.probe), updating: "update"}
	return h, nil
}

// Open fails when the endpoint cannot be reached, a configuration error to
// see at start; a "no" (any status other than 200) is a valid answer, and
// Open then returns nil with the throttler throttled.
func (h *HTTP) Open(ctx context.Context) error {
	if err := h.poll.Open(ctx); err != nil {
		return fmt.Errorf("throttler: open: %w", err)
	}
	h.log.Info("throttler: open", "method", h.method, "throttled", h.IsThrottled())
	return nil
}

// probe asks once. Any status is an answer; only the absence of one is an
// error. The poller never runs two probes at once.
func (h *HTTP) probe(ctx context.Context) (poller.Verdict, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	target := h.target.Load()
	req, err := http.NewRequestWithContext(ctx, h.method, target.url, nil)
	if err != nil {
		return poller.Verdict{}, fmt.Errorf("HTTP check: %w", err)
	}
	if h.header != nil {
		req.Header = h.header.Clone()
	}
	if h.host != "" {
		req.Host = h.host
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return poller.Verdict{}, fmt.Errorf("HTTP check: %w", err) // *url.Error names the method and the redacted URL
	}
	// The status is the answer and has arrived; the body is only detail.
	// Give the body a short while (an answer's body comes with its
	// headers): one that stalls or breaks costs its message, never the
	// answer, and the probe does not wait out the query timeout for it.
	bodyWait := time.AfterFunc(httpBodyWait, cancel)
	defer bodyWait.Stop()
	// Drain a bounded amount so the connection goes back to the pool, then
	// close: a body left open holds a connection and its goroutines.
	defer func() {
		_, _ = io.CopyN(io.Discard, resp.Body, httpMaxDrain)
		_ = resp.Body.Close()
	}()
	if resp.StatusCode == http.StatusOK {
		return poller.Verdict{}, nil
	}
	var body []byte
	if h.method == http.MethodGet {
		var readErr error
		if body, readErr = io.ReadAll(io.LimitReader(resp.Body, httpMaxMessage)); readErr != nil {
			body = nil // a fragment says nothing reliable
		}
	}
	return poller.Verdict{
		Throttled: true,
		Kind:      "HTTP " + strconv.Itoa(resp.StatusCode),
		Reason:    "HTTP check " + target.shown + ": " + httpStatusReason(resp.StatusCode, body),
	}, nil
}

// httpStatusReason says what a refusal means: the status, Freno's meaning of
// it, and the message and values of a GET's body.
func httpStatusReason(code int, body []byte) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(code))
	if text := http.StatusText(code); text != "" {
		b.WriteString(" " + text)
	}
	meaning := ""
	switch code {
	case http.StatusTooManyRequests:
		meaning = "threshold exceeded"
	case http.StatusExpectationFailed:
		meaning = "app denied"
	case http.StatusNotFound:
		meaning = "no such metric"
	}
	if meaning != "" {
		b.WriteString(": " + meaning)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return b.String()
	}
	// Freno's CheckResult. A body that is not one is shown as text.
	var cr struct {
		StatusCode *int
		Value      *float64
		Threshold  *float64
		Message    *string
	}
	if body[0] == '{' && json.Unmarshal(body, &cr) == nil && (cr.StatusCode != nil || cr.Message != nil || cr.Value != nil || cr.Threshold != nil) {
		if cr.Message != nil {
			if m := strings.TrimSpace(*cr.Message); m != "" && !strings.EqualFold(m, meaning) {
				b.WriteString(": " + httpPrintable(m))
			}
		}
		value, threshold := 0.0, 0.0
		if cr.Value != nil {
			value = *cr.Value
		}
		if cr.Threshold != nil {
			threshold = *cr.Threshold
		}
		if value != 0 || threshold != 0 {
			fmt.Fprintf(&b, " (value %s, threshold %s)", strconv.FormatFloat(value, 'g', -1, 64), strconv.FormatFloat(threshold, 'g', -1, 64))
		}
		return b.String()
	}
	b.WriteString(": " + httpPrintable(string(body)))
	return b.String()
}

// httpPrintable keeps a server's text to one short line: a reason lands in
// log lines and status pages.
func httpPrintable(s string) string {
	const max = 200
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// httpNewTransport is a transport of the throttler's own, so that Close can
// close its idle connections without touching anyone else's: a clone of
// http.DefaultTransport (proxies from the environment, its dial and idle
// timeouts) when that is still a *http.Transport.
func httpNewTransport() *http.Transport {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		return t.Clone()
	}
	return &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}
}

// SetURL changes the URL asked, validated as NewHTTP validates
// HTTPConfig.URL; a bad one is an error wrapping ErrInvalidConfig and
// changes nothing. There is no reading to judge again for a new URL: the
// throttler asks the new one at once instead, and its answer is published
// when it arrives (within WithQueryTimeout); until then the old URL's
// answer stands. A request to the old URL in flight meanwhile is published
// when it lands, then the new URL's. Before Open, Open asks the new URL.
func (h *HTTP) SetURL(rawURL string) error {
	target, err := httpParseURL("SetURL: the URL", rawURL)
	if err != nil {
		return configError([]error{err})
	}
	old := h.target.Swap(target)
	h.poll.Kick()
	h.log.Info("throttler: URL changed", "to", target.shown, "was", old.shown)
	return nil
}

// URL is the URL asked now, with any password redacted.
func (h *HTTP) URL() string { return h.target.Load().shown }

// Close also closes the idle connections of the client NewHTTP built.
func (h *HTTP) Close() error {
	h.poll.Close()
	if h.ownClient {
		h.client.CloseIdleConnections()
	}
	return nil
}

var (
	_ Throttler = (*HTTP)(nil)
	_ Waiter    = (*HTTP)(nil)
	_ Reasoner  = (*HTTP)(nil)
)

// String is the name given with WithName, or "HTTP", which names it in the
// reasons of a Multi that holds it (its own reason names the URL).
func (h *HTTP) String() string { return cmp.Or(h.name, "HTTP") }
