package interop

import (
	"strings"
	"testing"

	"github.com/etckit/etckit/server"
	"go.etcd.io/etcd/server/v3/features"
)

// TestFeatureGatesVsEtcd: `etckit serve --feature-gates=X` and etcd 3.7.3's
// own server feature gate answer X alike: the same error text, or the same
// gates set (String).
func TestFeatureGatesVsEtcd(t *testing.T) {
	for _, v := range []string{
		"", "LeaseCheckpoint=true", "LeaseCheckpoint=true,LeaseCheckpointPersist=true", " LeaseCheckpoint = false ,,",
		"AllAlpha=true", "AllBeta=false,FastLeaseKeepAlive=true", "AllAlpha=true,LeaseCheckpoint=false", "LeaseCheckpoint=1,CompactHashCheck=T",
		"Nope=true", "LeaseCheckpoint", "LeaseCheckpoint=yes", "leasecheckpoint=true", "=true", "PriorityRequest=true,SetMemberLocalAddr=false",
	} {
		fg := features.NewDefaultServerFeatureGate("test", nil)
		eerr := fg.(interface{ Set(string) error }).Set(v)
		cmd := server.NewCommand()
		kerr := cmd.ParseFlags([]string{"--feature-gates=" + v})
		switch {
		case eerr != nil:
			if kerr == nil || !strings.HasSuffix(kerr.Error(), eerr.Error()) {
				t.Errorf("%q: etcd %v, etckit %v", v, eerr, kerr)
			}
		case kerr != nil:
			t.Errorf("%q: etcd accepts, etckit %v", v, kerr)
		default:
			if e, k := fg.String(), cmd.Flags().Lookup("feature-gates").Value.String(); e != k {
				t.Errorf("%q: etcd %q, etckit %q", v, e, k)
			}
		}
	}
}
