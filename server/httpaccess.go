package server

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
)

// clientHTTPHandler is etcd's accessController in front of the client
// HTTP mux (embed/serve.go): on plain HTTP a Host outside
// --host-whitelist is refused (421, CVE-2018-5702); the CORS headers for
// the origins of --cors; OPTIONS answered 200. With --enable-pprof, Go's
// profiles are served under /debug/pprof/ first (etcd's
// debugutil.PProfHandlers).
func (s *Server) clientHTTPHandler(mux *http.ServeMux) http.Handler {
	if s.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		for _, p := range []string{"heap", "goroutine", "threadcreate", "block", "mutex", "allocs"} {
			mux.Handle("/debug/pprof/"+p, pprof.Handler(p))
		}
		s.log.Info("pprof is enabled", "path", "/debug/pprof")
	}
	allowAll := func(list []string) bool { return len(list) == 0 || slices.Contains(list, "*") }
	corsAll, hostsAll := allowAll(s.cfg.CORS), allowAll(s.cfg.HostWhitelist)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil && !hostsAll {
			host, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				host = r.Host
			}
			if !slices.Contains(s.cfg.HostWhitelist, host) {
				s.log.Warn("rejecting HTTP request to prevent DNS rebinding attacks", "host", host)
				http.Error(w, errCVE20185702(host), http.StatusMisdirectedRequest)
				return
			}
		}
		if corsAll {
			addCORSHeader(w, "*")
		} else if origin := r.Header.Get("Origin"); slices.Contains(s.cfg.CORS, origin) {
			addCORSHeader(w, origin)
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func addCORSHeader(w http.ResponseWriter, origin string) {
	w.Header().Add("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
	w.Header().Add("Access-Control-Allow-Origin", origin)
	w.Header().Add("Access-Control-Allow-Headers", "accept, content-type, authorization")
}

// errCVE20185702 is etcd's text for a refused Host.
func errCVE20185702(host string) string {
	return fmt.Sprintf(`
etcd received your request, but the Host header was unrecognized.

To fix this, choose one of the following options:
- Enable TLS, then any HTTPS request will be allowed.
- Add the hostname you want to use to the whitelist in settings.
  - e.g. etcd --host-whitelist %q

This requirement has been added to help prevent "DNS Rebinding" attacks (CVE-2018-5702).
`, host)
}
