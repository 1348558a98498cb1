package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// keepaliveIdle is how long TestServerKeepaliveDifferential holds an idle
// watch with client pings every 10 s: longer than a minute, past grpc-go's
// strike limit (three early pings) at any interval.
var keepaliveIdle = 65 * time.Second

// TestServerKeepaliveDifferential: gRPC keepalive as kube-apiserver and
// client/v3 use it, against etcd 3.7.3 and etckit side by side.
//
//   - A grpc-go client with keepalive.ClientParameters{Time: 10s, Timeout:
//     10s} holds an idle Watch for longer than a minute: with the default
//     --grpc-keepalive-min-time (5 s) both servers keep it, and an event put
//     afterwards arrives on the same stream. With --grpc-keepalive-min-time=0
//     (no enforcement policy: grpc-go's own, one ping per 5 minutes) both
//     send GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and the watch breaks,
//     which is what etckit did before it had the flag.
//   - Raw HTTP/2 pings faster than the min time on an open stream, and pings
//     on a connection with no stream at all (without-stream pings are not
//     permitted), get GOAWAY ENHANCE_YOUR_CALM "too_many_pings" from both;
//     pings 6 s apart on an open stream do not.
func TestServerKeepaliveDifferential(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: holds connections idle for over a minute")
	}
	type target struct {
		name string
		addr string
	}
	var targets []target
	for _, minTime := range []time.Duration{0, server.DefaultGRPCKeepAliveMinTime} {
		_, e := startEtcd(t, dataDir(t, "etcd"), func(c *embed.Config) { c.GRPCKeepAliveMinTime = minTime })
		_, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) {
			c.GRPCKeepAliveMinTime = minTime
			if minTime == 0 {
				c.GRPCKeepAliveMinTime = -1 // the flag's 0: disabled
			}
		})
		for _, m := range []*member{e, k} {
			targets = append(targets, target{fmt.Sprintf("%s/min-time=%v", m.name, minTime), m.endpoint})
		}
	}
	// Every check sleeps most of its time: they run at once (t.Parallel
	// would run them GOMAXPROCS at a time) and are reported one by one.
	type check struct {
		name string
		run  func() (error, error) // what the server did, and a setup failure
		want func(error) string    // "" when what the server did is right
	}
	var checks []check
	for _, tg := range targets {
		enforced := !strings.HasSuffix(tg.name, "=0s")
		checks = append(checks, check{"idle-watch-client-pings-10s/" + tg.name,
			func() (error, error) { return idleWatchWithPings(tg.addr, keepaliveIdle) },
			func(err error) string {
				switch {
				case enforced && err != nil:
					return fmt.Sprintf("idle watch with 10 s pings broke: %v", err)
				case !enforced && err == nil:
					return "idle watch held with 10 s pings and no enforcement policy: grpc-go's default should refuse them"
				}
				return ""
			}})
		if !enforced {
			continue
		}
		refused := func(what string) func(error) string {
			return func(err error) string {
				if !errors.Is(err, errTooManyPings) {
					return fmt.Sprintf("%s: %v, want GOAWAY ENHANCE_YOUR_CALM too_many_pings", what, err)
				}
				return ""
			}
		}
		checks = append(checks,
			check{"fast-pings-on-a-stream/" + tg.name,
				func() (error, error) { return rawPings(tg.addr, true, 4, 100*time.Millisecond), nil },
				refused("4 pings 100 ms apart on an open stream")},
			check{"pings-without-stream/" + tg.name,
				func() (error, error) { return rawPings(tg.addr, false, 4, 6*time.Second), nil },
				refused("4 pings 6 s apart with no stream")},
			check{"slow-pings-on-a-stream/" + tg.name,
				func() (error, error) { return rawPings(tg.addr, true, 4, 6*time.Second), nil },
				func(err error) string {
					if err != nil {
						return fmt.Sprintf("4 pings 6 s apart on an open stream (min time 5 s): %v", err)
					}
					return ""
				}})
	}
	type result struct{ got, setup error }
	results := make([]result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].got, results[i].setup = c.run()
		}()
	}
	wg.Wait()
	for i, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			r := results[i]
			if r.setup != nil {
				t.Fatal(r.setup)
			}
			if msg := c.want(r.got); msg != "" {
				t.Fatal(msg)
			}
			t.Logf("server's answer: %v", r.got)
		})
	}
}

// idleWatchWithPings opens a Watch over a connection that pings every 10 s,
// leaves it idle for d, then puts the watched key over another connection
// and waits for the event on the watch. It returns the first thing that
// went wrong: the watch failing or the connection leaving READY. setup
// is a failure of the test's own steps.
func idleWatchWithPings(addr string, d time.Duration) (got, setup error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 10 * time.Second}))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	ws, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		return nil, err
	}
	key := []byte(fmt.Sprintf("/keepalive/%d", time.Now().UnixNano()))
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: key}}}); err != nil {
		return nil, err
	}
	if r, err := ws.Recv(); err != nil || !r.Created {
		return nil, fmt.Errorf("watch create: %v %v", r, err)
	}
	recvc := make(chan error, 1)
	go func() {
		r, err := ws.Recv()
		if err == nil && (len(r.Events) != 1 || !bytes.Equal(r.Events[0].Kv.Key, key)) {
			err = fmt.Errorf("unexpected watch response %v", r)
		}
		recvc <- err
	}()
	idle := time.NewTimer(d)
	defer idle.Stop()
	for {
		st := conn.GetState()
		if st != connectivity.Ready {
			return fmt.Errorf("connection went %v while idle", st), nil
		}
		wctx, wcancel := context.WithCancel(ctx)
		changed := make(chan struct{})
		go func() { conn.WaitForStateChange(wctx, st); close(changed) }()
		select {
		case err := <-recvc:
			wcancel()
			return fmt.Errorf("watch ended while idle: %v", err), nil
		case <-changed:
			wcancel()
			continue
		case <-idle.C:
			wcancel()
		}
		break
	}
	other, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer other.Close()
	if _, err := pb.NewKVClient(other).Put(ctx, &pb.PutRequest{Key: key, Value: []byte("v")}); err != nil {
		return nil, err
	}
	select {
	case err := <-recvc:
		if err != nil {
			return fmt.Errorf("watch after %v idle: %v", d, err), nil
		}
		return nil, nil
	case <-ctx.Done():
		return fmt.Errorf("no event on the watch after %v idle", d), nil
	}
}

// errTooManyPings is a GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
var errTooManyPings = errors.New("GOAWAY ENHANCE_YOUR_CALM too_many_pings")

// rawPings speaks HTTP/2 itself: the preface and SETTINGS, a Watch stream
// left open if withStream, then n PINGs every gap. It returns nil when
// every ping is acknowledged and no GOAWAY follows within a second of the
// last, errTooManyPings on the GOAWAY grpc-go sends a client breaking the
// enforcement policy, or any other failure.
func rawPings(addr string, withStream bool, n int, gap time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	if withStream {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/etcdserverpb.Watch/Watch"},
			{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
	}
	// goAway is a GOAWAY frame's contents (the framer reuses its buffers).
	type goAway struct {
		code  http2.ErrCode
		debug string
	}
	frames := make(chan any, 64)
	readErr := make(chan error, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				readErr <- err
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				frames <- goAway{g.ErrCode, string(g.DebugData())}
				continue
			}
			frames <- f
		}
	}()
	acks := 0
	check := func(f any) error {
		switch f := f.(type) {
		case goAway:
			if f.code == http2.ErrCodeEnhanceYourCalm && f.debug == "too_many_pings" {
				return errTooManyPings
			}
			return fmt.Errorf("GOAWAY %v %q", f.code, f.debug)
		case *http2.PingFrame:
			if f.IsAck() {
				acks++
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				return fr.WriteSettingsAck()
			}
		}
		return nil
	}
	deadline := time.NewTimer(time.Duration(n)*gap + 10*time.Second)
	defer deadline.Stop()
	for i := 0; i < n; i++ {
		if err := fr.WritePing(false, [8]byte{byte(i + 1)}); err != nil {
			return err
		}
		wait := time.NewTimer(gap)
		for waiting := true; waiting; {
			select {
			case f := <-frames:
				if err := check(f); err != nil {
					wait.Stop()
					return err
				}
			case err := <-readErr:
				wait.Stop()
				return fmt.Errorf("connection closed after %d pings: %w", i+1, err)
			case <-wait.C:
				waiting = false
			case <-deadline.C:
				return errors.New("timed out")
			}
		}
	}
	after := time.NewTimer(time.Second)
	defer after.Stop()
	for {
		select {
		case f := <-frames:
			if err := check(f); err != nil {
				return err
			}
		case err := <-readErr:
			return fmt.Errorf("connection closed after %d pings: %w", n, err)
		case <-after.C:
			if acks != n {
				return fmt.Errorf("%d of %d pings acknowledged", acks, n)
			}
			return nil
		}
	}
}

// TestServerKeepalivePingsIdleClients: with --grpc-keepalive-interval=1s
// and --grpc-keepalive-timeout=1s, etcd and etckit ping a connection that
// has been idle for a second and close it when the ping is not answered
// within a second; a client that answers keeps its connection.
func TestServerKeepalivePingsIdleClients(t *testing.T) {
	_, e := startEtcd(t, dataDir(t, "etcd"), func(c *embed.Config) {
		c.GRPCKeepAliveInterval, c.GRPCKeepAliveTimeout = time.Second, time.Second
	})
	_, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) {
		c.GRPCKeepAliveInterval, c.GRPCKeepAliveTimeout = time.Second, time.Second
	})
	for _, m := range []*member{e, k} {
		for _, answer := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/answer=%v", m.name, answer), func(t *testing.T) {
				pings, closed, err := serverPings(m.endpoint, answer, 6*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%d pings from the server; closed after %v", pings, closed)
				if pings == 0 {
					t.Fatal("the server never pinged an idle connection")
				}
				if !answer && (closed == 0 || closed > 4*time.Second) {
					t.Fatalf("an unanswered ping: the connection was closed after %v, want 2-3 s", closed)
				}
				if answer && closed != 0 {
					t.Fatalf("a client answering every ping was closed after %v", closed)
				}
			})
		}
	}
}

// serverPings opens a raw HTTP/2 connection, sends nothing after the
// preface and SETTINGS, and reads for d, acknowledging the server's pings
// if answer. It returns how many pings the server sent and when it closed
// the connection (0: not within d).
func serverPings(addr string, answer bool, d time.Duration) (pings int, closed time.Duration, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return 0, 0, err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return 0, 0, err
	}
	c.SetReadDeadline(start.Add(d))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return pings, 0, nil
			}
			return pings, time.Since(start), nil
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				pings++
				if answer {
					fr.WritePing(true, f.Data)
				}
			}
		case *http2.GoAwayFrame:
			return pings, time.Since(start), nil
		}
	}
}

// TestServerHTTP2SettingsDifferential compares the HTTP/2 SETTINGS etcd
// and etckit send a new client connection, with the defaults and with
// --max-concurrent-streams=10. They are equal except for one chosen
// difference: etckit sets fixed flow-control windows (INITIAL_WINDOW_SIZE
// and a connection WINDOW_UPDATE, see server/grpc.go) where etcd starts at
// grpc-go's 64 KiB and grows them by BDP pings; a client may send more
// before it waits, nothing else changes for it.
func TestServerHTTP2SettingsDifferential(t *testing.T) {
	for _, streams := range []uint32{0, 10} {
		_, e := startEtcd(t, dataDir(t, "etcd"), func(c *embed.Config) {
			if streams != 0 {
				c.MaxConcurrentStreams = streams
			}
		})
		_, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) { c.MaxConcurrentStreams = streams })
		got := map[string]map[http2.SettingID]uint32{}
		for _, m := range []*member{e, k} {
			s, err := serverSettings(m.endpoint)
			if err != nil {
				t.Fatalf("%s: %v", m.name, err)
			}
			got[m.name] = s
		}
		t.Logf("--max-concurrent-streams=%d: etcd %v, etckit %v", streams, got["etcd"], got["etckit"])
		if w := got["etckit"][http2.SettingInitialWindowSize]; w < 1<<20 {
			t.Errorf("etckit's INITIAL_WINDOW_SIZE is %d, want its fixed window of at least 1 MiB", w)
		}
		delete(got["etckit"], http2.SettingInitialWindowSize)
		if fmt.Sprint(got["etcd"]) != fmt.Sprint(got["etckit"]) {
			t.Errorf("--max-concurrent-streams=%d: SETTINGS differ: etcd %v, etckit %v", streams, got["etcd"], got["etckit"])
		}
		if streams != 0 && got["etckit"][http2.SettingMaxConcurrentStreams] != streams {
			t.Errorf("etckit's MAX_CONCURRENT_STREAMS is %d, want %d", got["etckit"][http2.SettingMaxConcurrentStreams], streams)
		}
	}
}

// serverSettings reads the SETTINGS frame a server sends first.
func serverSettings(addr string) (map[http2.SettingID]uint32, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return nil, err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			out := map[http2.SettingID]uint32{}
			s.ForeachSetting(func(st http2.Setting) error { out[st.ID] = st.Val; return nil })
			return out, nil
		}
	}
}
