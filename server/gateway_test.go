package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestGateway: the JSON API under /v3/ reaches the gRPC services, with
// etcd's JSON (proto names, 64-bit numbers as strings, bytes as base64)
// and etcd's error messages; with auth on, the token goes in the
// Authorization header.
func TestGateway(t *testing.T) {
	s, _ := startServer(t, filepath.Join(t.TempDir(), "m"))
	base := "http://" + s.ClientAddrs()[0]
	post := func(path, body, token string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
		return resp.StatusCode, m
	}
	// key "foo", value "bar", base64.
	if code, m := post("/v3/kv/put", `{"key":"Zm9v","value":"YmFy"}`, ""); code != 200 || m["header"].(map[string]any)["revision"] != "2" {
		t.Fatalf("put: %d %v", code, m)
	}
	code, m := post("/v3/kv/range", `{"key":"Zm9v","unknown_field":1}`, "")
	if code != 200 || m["count"] != "1" || m["kvs"].([]any)[0].(map[string]any)["value"] != "YmFy" {
		t.Fatalf("range: %d %v", code, m)
	}
	if _, ok := m["header"].(map[string]any)["cluster_id"]; !ok {
		t.Fatalf("range header without cluster_id (proto names): %v", m)
	}
	// The old prefix still answers.
	if code, _ := post("/v3beta/kv/range", `{"key":"Zm9v"}`, ""); code != 200 {
		t.Fatalf("/v3beta/: %d", code)
	}
	for _, r := range []string{
		`/v3/auth/user/add {"name":"root","password":"pw"}`,
		`/v3/auth/user/grant {"user":"root","role":"root"}`,
		`/v3/auth/enable {}`,
	} {
		path, body, _ := strings.Cut(r, " ")
		if code, m := post(path, body, ""); code != 200 {
			t.Fatalf("%s: %d %v", path, code, m)
		}
	}
	if code, m := post("/v3/kv/put", `{"key":"Zm9v","value":"YmFy"}`, ""); code == 200 || m["message"] != "etcdserver: user name is empty" {
		t.Fatalf("put without a token: %d %v", code, m)
	}
	code, m = post("/v3/auth/authenticate", `{"name":"root","password":"pw"}`, "")
	tok, _ := m["token"].(string)
	if code != 200 || tok == "" {
		t.Fatalf("authenticate: %d %v", code, m)
	}
	for _, h := range []string{tok, "Bearer " + tok} {
		if code, m := post("/v3/kv/put", `{"key":"Zm9v","value":"YmF6"}`, h); code != 200 {
			t.Fatalf("put with Authorization %q: %d %v", h[:6], code, m)
		}
	}
	if code, m := post("/v3/auth/authenticate", `{"name":"root","password":"bad"}`, ""); code == 200 ||
		m["message"] != "etcdserver: authentication failed, invalid user ID or password" {
		t.Fatalf("wrong password: %d %v", code, m)
	}
	// A watch over the gateway streams (chunked JSON) until the client goes.
	req, _ := http.NewRequest(http.MethodPost, base+"/v3/watch", bytes.NewReader([]byte(`{"create_request":{"key":"Zm9v"}}`)))
	req.Header.Set("Authorization", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(resp.Body)
	var first map[string]any
	if err := dec.Decode(&first); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r, _ := first["result"].(map[string]any); r == nil || r["created"] != true {
		t.Fatalf("watch over the gateway: %v", first)
	}
}
