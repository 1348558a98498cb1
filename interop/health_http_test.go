package interop

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestHealthEndpointsVsEtcd: /health, /livez and /readyz (each check's own
// path, ?verbose, ?exclude=, ?serializable=, a POST) on etcd 3.7.3 (embed)
// and etckit, healthy, then with a NOSPACE alarm, then with a CORRUPT one:
// status, the headers etcd sets and the body must be equal.
func TestHealthEndpointsVsEtcd(t *testing.T) {
	e, em := startEtcd(t, filepath.Join(t.TempDir(), "etcd"))
	k, km := startEtckit(t, filepath.Join(t.TempDir(), "etckit"), nil)
	paths := []string{
		"/health", "/health?serializable=true", "/health?exclude=NOSPACE", "/health?exclude=NOSPACE&exclude=CORRUPT",
		"/livez", "/livez?verbose", "/livez/serializable_read", "/livez?exclude=serializable_read&verbose",
		"/readyz/data_corruption?verbose", "/readyz/linearizable_read", "/readyz/non_learner?verbose", "/readyz/serializable_read",
		"/readyz?exclude=data_corruption&exclude=linearizable_read&exclude=non_learner&verbose",
		"/readyz?exclude=nonexistent&exclude=data_corruption&exclude=linearizable_read&exclude=non_learner",
		"POST /health", "POST /livez", "PUT /readyz/non_learner",
	}
	// /readyz with every check runs them in Go map order on etcd: only the
	// status and the set of lines can be compared.
	unordered := []string{"/readyz", "/readyz?verbose"}
	c := &http.Client{Timeout: 15 * time.Second}
	get := func(m *member, p string) string {
		method := http.MethodGet
		if i := strings.IndexByte(p, ' '); i > 0 {
			method, p = p[:i], p[i+1:]
		}
		req, err := http.NewRequest(method, "http://"+m.endpoint+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", m.name, p, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d ct=%q nosniff=%q allow=%q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"),
			resp.Header.Get("X-Content-Type-Options"), resp.Header.Get("Allow"), b)
	}
	sortedLines := func(s string) string {
		lines := strings.Split(s, "\n")
		head, rest := lines[0], lines[1:]
		slices.Sort(rest)
		return head + "\n" + strings.Join(rest, "\n")
	}
	compare := func(stage string) {
		for _, p := range paths {
			if eo, ko := get(em, p), get(km, p); eo != ko {
				t.Errorf("%s: %s:\netcd:   %s\netckit: %s", stage, p, eo, ko)
			}
		}
		for _, p := range unordered {
			if eo, ko := sortedLines(get(em, p)), sortedLines(get(km, p)); eo != ko {
				t.Errorf("%s: %s (lines sorted):\netcd:   %s\netckit: %s", stage, p, eo, ko)
			}
		}
		t.Logf("%s: %s", stage, get(km, "/readyz?verbose"))
	}
	compare("healthy")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, alarm := range []pb.AlarmType{pb.AlarmType_NOSPACE, pb.AlarmType_CORRUPT} {
		for _, x := range []struct {
			m  *member
			id uint64
		}{{em, uint64(e.Server.MemberID())}, {km, k.ID()}} {
			if _, err := x.m.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: x.id, Alarm: alarm}); err != nil {
				t.Fatalf("%s: alarm %v: %v", x.m.name, alarm, err)
			}
		}
		compare("alarm " + alarm.String())
		// One alarm at a time: with two active, etcd's /health names the
		// first of its alarm map, in Go map order.
		for _, x := range []struct {
			m  *member
			id uint64
		}{{em, uint64(e.Server.MemberID())}, {km, k.ID()}} {
			if _, err := x.m.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: x.id, Alarm: alarm}); err != nil {
				t.Fatalf("%s: disarm %v: %v", x.m.name, alarm, err)
			}
		}
	}
	compare("disarmed")
}
