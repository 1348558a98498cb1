package interop

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// downgradeTranscript runs one fixed session of Maintenance.Downgrade on
// the single member m and returns every answer: VALIDATE, ENABLE and
// CANCEL with good and bad targets, the downgrade info in Status, and the
// cluster and storage versions the version monitors move to (/version),
// down to the target while the downgrade is enabled and back up once it
// is cancelled.
func downgradeTranscript(t *testing.T, m *member) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out []string
	record := func(what string, resp proto.Message, err error) {
		if err != nil {
			s := status.Convert(err)
			out = append(out, fmt.Sprintf("%s: error %s: %s", what, s.Code(), s.Message()))
			return
		}
		out = append(out, fmt.Sprintf("%s: %s", what, text(normalize(resp))))
	}
	version := func() string {
		resp, err := http.Get("http://" + m.endpoint + "/version")
		if err != nil {
			t.Fatalf("%s: /version: %v", m.name, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// waitVersion polls /version until it is want (the monitors run every
	// 4 s on etcd and etckit alike) and records it.
	waitVersion := func(what, want string) {
		var got string
		for i := 0; i < 150; i++ {
			if got = version(); got == want {
				out = append(out, what+": "+got)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %s: /version %s, want %s", m.name, what, got, want)
	}
	status := func(what string) {
		st, err := m.maint.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatalf("%s: status: %v", m.name, err)
		}
		out = append(out, fmt.Sprintf("%s: storage %q, downgrade %s", what, st.StorageVersion, text(st.DowngradeInfo)))
	}
	down := func(what string, action pb.DowngradeRequest_DowngradeAction, ver string) {
		resp, err := m.maint.Downgrade(ctx, &pb.DowngradeRequest{Action: action, Version: ver})
		record(what, resp, err)
	}

	waitVersion("started", `{"etcdserver":"3.7.3","etcdcluster":"3.7.0","storage":"3.7.0"}`)
	status("status")
	down("validate 3.0", pb.DowngradeRequest_VALIDATE, "3.0")
	down("validate 3.8", pb.DowngradeRequest_VALIDATE, "3.8")
	down("validate 3.7", pb.DowngradeRequest_VALIDATE, "3.7")
	down("validate nonsense", pb.DowngradeRequest_VALIDATE, "three.six")
	down("validate empty", pb.DowngradeRequest_VALIDATE, "")
	down("validate 3.6", pb.DowngradeRequest_VALIDATE, "3.6")
	down("validate 3.6.5", pb.DowngradeRequest_VALIDATE, "3.6.5")
	down("cancel with none enabled", pb.DowngradeRequest_CANCEL, "")
	down("enable 3.5", pb.DowngradeRequest_ENABLE, "3.5")
	down("enable 3.6", pb.DowngradeRequest_ENABLE, "3.6")
	down("enable 3.6 again", pb.DowngradeRequest_ENABLE, "3.6")
	down("validate 3.6 while enabled", pb.DowngradeRequest_VALIDATE, "3.6")
	status("status while enabled")
	down("unknown action", pb.DowngradeRequest_DowngradeAction(7), "3.6")
	waitVersion("downgrading", `{"etcdserver":"3.7.3","etcdcluster":"3.6.0","storage":"3.6.0"}`)
	status("status downgrading")
	down("validate 3.5 at cluster 3.6", pb.DowngradeRequest_VALIDATE, "3.5")
	down("cancel", pb.DowngradeRequest_CANCEL, "")
	status("status cancelled")
	waitVersion("back up", `{"etcdserver":"3.7.3","etcdcluster":"3.7.0","storage":"3.7.0"}`)
	return out
}

// TestServerDowngradeDifferential: etcd 3.7.3 and etckit answer the same
// Downgrade session alike and their version monitors move the cluster and
// storage versions the same way; then the gateway's downgrade call (etcd's
// TestCurlV3MaintenanceDowngrade) gives the same body.
func TestServerDowngradeDifferential(t *testing.T) {
	_, e := startEtcd(t, dataDir(t, "etcd"))
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	te, tk := downgradeTranscript(t, e), downgradeTranscript(t, k)
	for i := range max(len(te), len(tk)) {
		var a, b string
		if i < len(te) {
			a = te[i]
		}
		if i < len(tk) {
			b = tk[i]
		}
		if a != b {
			t.Fatalf("step %d:\netcd:   %s\netckit: %s", i, a, b)
		}
		t.Log(a)
	}
	var bodies []string
	for _, m := range []*member{e, k} {
		resp, err := http.Post("http://"+m.endpoint+"/v3/maintenance/downgrade", "application/json", strings.NewReader(`{"action": 0, "version": "3.0"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		bodies = append(bodies, fmt.Sprintf("%d %s", resp.StatusCode, scrubHeaderJSON(string(b))))
	}
	if bodies[0] != bodies[1] {
		t.Fatalf("gateway:\netcd:   %s\netckit: %s", bodies[0], bodies[1])
	}
	t.Logf("%d steps equal; gateway: %s", len(te), bodies[0])
}
