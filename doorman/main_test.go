package doorman_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/throttlekit/throttler"
	"github.com/throttlekit/throttler/doorman"
	"github.com/throttlekit/throttler/doorman/internal/fakedoorman"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// network is a set of in-memory servers by address (bufconn), which works
// inside a synctest bubble: its reads and writes block durably. An address
// with no server refuses connections, as a killed server's would.
type network struct {
	mu  sync.Mutex
	lis map[string]*bufconn.Listener
}

func newNetwork() *network { return &network{lis: map[string]*bufconn.Listener{}} }

func (n *network) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			n.mu.Lock()
			l := n.lis[addr]
			n.mu.Unlock()
			if l == nil {
				return nil, errors.New("connection refused")
			}
			return l.DialContext(ctx)
		}),
	}
}

// serve starts s at addr and returns the function that kills it (stops the
// gRPC server and its connections); the test's cleanup kills it too.
func (n *network) serve(t *testing.T, addr string, s *fakedoorman.Server) (kill func()) {
	t.Helper()
	l := bufconn.Listen(1 << 16)
	g := s.GRPC()
	n.mu.Lock()
	require.Nil(t, n.lis[addr], "a server already serves %s", addr)
	n.lis[addr] = l
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(l)
	}()
	var once sync.Once
	kill = func() {
		once.Do(func() {
			n.mu.Lock()
			delete(n.lis, addr)
			n.mu.Unlock()
			g.Stop()
			<-done
		})
	}
	t.Cleanup(kill)
	return kill
}

// config is a client of resource "rows" at addr on n.
func (n *network) config(addr, client string, wants float64) doorman.Config {
	return doorman.Config{Addr: addr, ClientID: client, ResourceID: "rows", Wants: wants,
		RPCTimeout: 500 * time.Millisecond, DialOptions: n.dialOptions()}
}

// open opens a new throttler and closes it at the test's end.
func open(t *testing.T, cfg doorman.Config, opts ...doorman.Option) *doorman.Throttler {
	t.Helper()
	d, err := doorman.New(cfg, nil, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	require.NoError(t, d.Open(t.Context()))
	return d
}

// callers runs n goroutines calling Wait on w for d and returns the calls
// admitted (those it returned nil for).
func callers(w throttler.Waiter, n int, d time.Duration) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var calls atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := w.Wait(ctx)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					calls.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return calls.Load()
}

func ptr[T any](v T) *T { return &v }
