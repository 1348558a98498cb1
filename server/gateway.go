package server

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/tmc/grpc-websocket-proxy/wsproxy"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	electiongw "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb/gw"
	lockgw "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
)

// The gRPC gateway (etcd --enable-grpc-gateway, on by default): the v3 API
// as JSON over HTTP under /v3/, with etcd's generated handlers
// (go.etcd.io/etcd/api/v3/etcdserverpb/gw) relaying each call to this
// member's own gRPC server, and websockets for the streams, as etcd's
// embed.serveCtx does. etcd dials its client listener for the relay; here
// it is an in-process connection, so the relayed call carries no
// certificate of its own (etcd ignores the gateway's anyway).

// gatewayConn is the in-process connection between gateway and gRPC server.
type gatewayConn struct {
	l    *bufconn.Listener
	conn *grpc.ClientConn
}

// gatewayBuffer is the size of each direction's buffer of the in-process
// connection: large enough that gRPC's writer rarely waits for its reader
// (net.Pipe, unbuffered, handed over every frame between goroutines).
const gatewayBuffer = 1 << 20

func (s *Server) registerGateway(mux *http.ServeMux) error {
	ml := bufconn.Listen(gatewayBuffer)
	conn, err := grpc.NewClient("passthrough:///etckit-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ml.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
	if err != nil {
		return err
	}
	gwmux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
		Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	ctx := context.Background()
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gw.RegisterKVHandler, gw.RegisterWatchHandler, gw.RegisterLeaseHandler,
		gw.RegisterClusterHandler, gw.RegisterMaintenanceHandler, gw.RegisterAuthHandler,
		lockgw.RegisterLockHandler, electiongw.RegisterElectionHandler,
	} {
		if err := register(ctx, gwmux, conn); err != nil {
			conn.Close()
			return err
		}
	}
	s.gateway = &gatewayConn{l: ml, conn: conn}
	h := wsproxy.WebsocketProxy(gwmux,
		// Streams are POSTs to the gateway, whatever the websocket's method.
		wsproxy.WithRequestMutator(func(_ *http.Request, out *http.Request) *http.Request {
			out.Method = http.MethodPost
			return out
		}),
		wsproxy.WithMaxRespBodyBufferSize(0x7fffffff),
	)
	mux.Handle("/v3/", s.gatewayGuard(h))
	// etcd still answers its old prefix.
	mux.Handle("/v3beta/", s.gatewayGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.Replace(r.URL.Path, "/v3beta/", "/v3/", 1)
		h.ServeHTTP(w, r)
	})))
	return nil
}

// gatewayGuard is etcd's accessController check for the gateway: with
// --client-cert-auth and auth enabled, a request over TLS whose client
// certificate has a common name is refused, since the gateway cannot pass
// that identity on (the user must send a token).
func (s *Server) gatewayGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && s.cfg.ClientTLS.ClientCertAuth && s.eng.Auth().Enabled() {
			for _, chain := range r.TLS.VerifiedChains {
				if len(chain) > 0 && chain[0].Subject.CommonName != "" {
					http.Error(w, "CommonName of client sending a request against gateway will be ignored and not used as expected", http.StatusBadRequest)
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// serveGateway starts the gRPC server on the in-process listener.
func (s *Server) serveGateway() {
	if s.gateway != nil {
		go func() { _ = s.grpc.Serve(s.gateway.l) }()
	}
}

func (s *Server) closeGateway() {
	if s.gateway != nil {
		s.gateway.conn.Close()
		s.gateway.l.Close()
	}
}
