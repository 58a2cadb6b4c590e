// Package fakedoorman is an in-process Doorman server for the module's
// tests: the server side of the protocol as its public description has it.
// One resource template serves every resource: a capacity split by fair
// share among the clients holding unexpired leases (never taking back what
// is granted, so a newcomer gets at most what is unassigned until the others
// refresh), leases of whole seconds with a refresh interval, learning mode
// after start (a client is granted what it says it has, or 0), an optional
// fixed safe capacity (otherwise capacity ÷ clients, as Doorman computes
// it), ReleaseCapacity, and a non-master mode that redirects to a master.
// Freeze holds every request until Thaw (a stopped process); a server is
// killed by stopping the grpc.Server that serves it.
package fakedoorman

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/throttlekit/throttler/doorman/doormanpb"
)

// Config is the server's one resource template and its role.
type Config struct {
	Capacity float64
	// LeaseLength and RefreshInterval are in whole seconds.
	LeaseLength, RefreshInterval int64
	// LearningMode is how long after the start clients are granted what
	// they say they have; 0 is none.
	LearningMode time.Duration
	// SafeCapacity, when set, is sent as is; otherwise capacity ÷ clients,
	// unless OmitSafeCapacity (a server that sends none).
	SafeCapacity     *float64
	OmitSafeCapacity bool
	// MasterAddress, when set, makes this server a non-master that
	// answers every request with it; NotMaster without an address.
	MasterAddress string
	NotMaster     bool
}

type lease struct {
	expiry   int64
	capacity float64
	wants    float64
}

// Server implements doorman.Capacity.
type Server struct {
	pb.UnimplementedCapacityServer

	mu       sync.Mutex
	cfg      Config
	start    time.Time
	leases   map[string]map[string]lease // resource → client → lease
	requests int
	released []string // "client/resource", in order
	frozen   chan struct{}
	lastReq  map[string]*pb.ResourceRequest // by client
}

// New returns a server whose learning mode starts now.
func New(cfg Config) *Server {
	return &Server{cfg: cfg, start: time.Now(), leases: map[string]map[string]lease{}, lastReq: map[string]*pb.ResourceRequest{}}
}

// GRPC returns a grpc.Server serving s, with the interceptor that Freeze
// uses.
func (s *Server) GRPC() *grpc.Server {
	g := grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	pb.RegisterCapacityServer(g, s)
	return g
}

func (s *Server) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	s.mu.Lock()
	frozen := s.frozen
	s.mu.Unlock()
	if frozen != nil {
		select {
		case <-frozen:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h(ctx, req)
}

// Freeze holds every request, those in flight included, until Thaw.
func (s *Server) Freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen == nil {
		s.frozen = make(chan struct{})
	}
}

// Thaw answers the held requests and those to come.
func (s *Server) Thaw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen != nil {
		close(s.frozen)
		s.frozen = nil
	}
}

// SetConfig replaces the template (Doorman re-reads its file on SIGHUP).
func (s *Server) SetConfig(cfg Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
}

// Grants returns the unexpired leases of resource, by client.
func (s *Server) Grants(resource string) map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	now := time.Now().Unix()
	for c, l := range s.leases[resource] {
		if l.expiry > now {
			out[c] = l.capacity
		}
	}
	return out
}

// Requests is how many GetCapacity requests were answered.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Released lists the releases, as "client/resource".
func (s *Server) Released() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.released...)
}

// LastRequest is client's last resource request, as received.
func (s *Server) LastRequest(client string) *pb.ResourceRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastReq[client]
}

func (s *Server) mastership() *pb.Mastership {
	switch {
	case s.cfg.MasterAddress != "":
		return &pb.Mastership{MasterAddress: proto.String(s.cfg.MasterAddress)}
	case s.cfg.NotMaster:
		return &pb.Mastership{}
	}
	return nil
}

// Discovery says whether this server is the master.
func (s *Server) Discovery(context.Context, *pb.DiscoveryRequest) (*pb.DiscoveryResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.mastership(); m != nil {
		return &pb.DiscoveryResponse{Mastership: m, IsMaster: proto.Bool(false)}, nil
	}
	return &pb.DiscoveryResponse{Mastership: &pb.Mastership{}, IsMaster: proto.Bool(true)}, nil
}

// GetCapacity grants each resource of the request.
func (s *Server) GetCapacity(_ context.Context, req *pb.GetCapacityRequest) (*pb.GetCapacityResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.mastership(); m != nil {
		return &pb.GetCapacityResponse{Mastership: m}, nil
	}
	s.requests++
	now := time.Now()
	client := req.GetClientId()
	resp := &pb.GetCapacityResponse{}
	for _, r := range req.Resource {
		s.lastReq[client] = r
		id := r.GetResourceId()
		ls := s.leases[id]
		if ls == nil {
			ls = map[string]lease{}
			s.leases[id] = ls
		}
		for c, l := range ls {
			if l.expiry <= now.Unix() {
				delete(ls, c)
			}
		}
		var got float64
		if now.Before(s.start.Add(s.cfg.LearningMode)) {
			got = r.GetHas().GetCapacity() // learning: whatever it says it has
		} else {
			ls[client] = lease{wants: r.GetWants()} // counted among the clients
			got = s.fairShare(ls, client)
		}
		exp := now.Unix() + s.cfg.LeaseLength
		ls[client] = lease{expiry: exp, capacity: got, wants: r.GetWants()}
		safe := s.cfg.Capacity / float64(len(ls))
		if s.cfg.SafeCapacity != nil {
			safe = *s.cfg.SafeCapacity
		}
		rr := &pb.ResourceResponse{
			ResourceId: proto.String(id),
			Gets: &pb.Lease{ExpiryTime: proto.Int64(exp), RefreshInterval: proto.Int64(s.cfg.RefreshInterval),
				Capacity: proto.Float64(got)},
		}
		if !s.cfg.OmitSafeCapacity {
			rr.SafeCapacity = proto.Float64(safe)
		}
		resp.Response = append(resp.Response, rr)
	}
	return resp, nil
}

// fairShare is client's grant: its equal share of the capacity, with what
// the clients that want less leave over shared out equally among the
// others, in rounds; at most what the other clients do not hold now.
func (s *Server) fairShare(ls map[string]lease, client string) float64 {
	ids := make([]string, 0, len(ls))
	for c := range ls {
		ids = append(ids, c)
	}
	sort.Slice(ids, func(i, j int) bool { return ls[ids[i]].wants < ls[ids[j]].wants })
	left := s.cfg.Capacity
	var target float64
	for i, c := range ids {
		share := left / float64(len(ids)-i)
		give := math.Min(ls[c].wants, share)
		left -= give
		if c == client {
			target = give
		}
	}
	held := 0.0
	for c, l := range ls {
		if c != client {
			held += l.capacity
		}
	}
	return math.Max(0, math.Min(target, s.cfg.Capacity-held))
}

// ReleaseCapacity drops the client's leases of the resources named.
func (s *Server) ReleaseCapacity(_ context.Context, req *pb.ReleaseCapacityRequest) (*pb.ReleaseCapacityResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.mastership(); m != nil {
		return &pb.ReleaseCapacityResponse{Mastership: m}, nil
	}
	for _, id := range req.ResourceId {
		delete(s.leases[id], req.GetClientId())
		s.released = append(s.released, req.GetClientId()+"/"+id)
	}
	return &pb.ReleaseCapacityResponse{}, nil
}
