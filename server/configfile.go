package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// etcd's configuration file (--config-file): YAML with the keys of etcd's
// embed.Config and configYAML JSON tags, read with sigs.k8s.io/yaml as
// etcd reads it. Each key sets the flag of the same meaning, so a file
// and the equivalent command line give the same member; as in etcd,
// duration-typed keys are integer nanoseconds, and keys etcd does not
// know are ignored (etcd's YAML decoding is not strict).

// fileArrayKeys are the keys etcd types []string (the others that map to
// list flags are comma-separated strings in etcd's file).
var fileArrayKeys = []string{"cipher-suites", "log-outputs"}

// fileKeyOnly are top-level keys of etcd's file that no flag of etcd has.
var fileKeyOnly = []string{"client-transport-security", "peer-transport-security", "socket-options", "discovery-config", "grpc-additional-server-options"}

// fileNested maps the keys of etcd's nested file sections to flags.
var fileNested = map[string]map[string]string{
	"client-transport-security": {
		"cert-file": "cert-file", "key-file": "key-file", "client-cert-file": "client-cert-file",
		"client-key-file": "client-key-file", "client-cert-auth": "client-cert-auth", "trusted-ca-file": "trusted-ca-file",
		"auto-tls": "auto-tls", "allowed-hostname": "client-cert-allowed-hostname",
		// etcd copies these into its client TLSInfo too, where nothing
		// reads them; so here (no flag).
		"allowed-cn": "", "skip-client-san-verification": "",
	},
	"peer-transport-security": {
		"cert-file": "peer-cert-file", "key-file": "peer-key-file", "client-cert-file": "peer-client-cert-file",
		"client-key-file": "peer-client-key-file", "client-cert-auth": "peer-client-cert-auth", "trusted-ca-file": "peer-trusted-ca-file",
		"auto-tls": "peer-auto-tls", "allowed-cn": "peer-cert-allowed-cn", "allowed-hostname": "peer-cert-allowed-hostname",
		"skip-client-san-verification": "peer-skip-client-san-verification",
	},
	"socket-options": {"reuse-port": "socket-reuse-port", "reuse-address": "socket-reuse-address"},
	"discovery-config": {
		"endpoints": "discovery-endpoints", "token": "discovery-token", "dial-timeout": "discovery-dial-timeout",
		"request-timeout": "discovery-request-timeout", "keepalive-time": "discovery-keepalive-time",
		"keepalive-timeout": "discovery-keepalive-timeout",
	},
	"discovery-config.secure": {
		"cert": "discovery-cert", "key": "discovery-key", "cacert": "discovery-cacert",
		"insecure-transport": "discovery-insecure-transport", "insecure-skip-tls-verify": "discovery-insecure-skip-tls-verify",
	},
	"discovery-config.auth": {"username": "discovery-user", "password": "discovery-password"},
}

// notFileKeys are flags etcd's file has no key for (they are set in it
// through the nested sections above, or not at all).
var notFileKeys = []string{
	"config-file", "version", "discovery-fallback", "raft-read-timeout", "raft-write-timeout",
	"client-crl-file", "peer-crl-file", "socket-reuse-port", "socket-reuse-address",
	"cert-file", "key-file", "client-cert-file", "client-key-file", "client-cert-auth", "trusted-ca-file", "auto-tls",
	"client-cert-allowed-hostname", "peer-cert-file", "peer-key-file", "peer-client-cert-file", "peer-client-key-file",
	"peer-client-cert-auth", "peer-trusted-ca-file", "peer-auto-tls", "peer-cert-allowed-cn", "peer-cert-allowed-hostname",
	"peer-skip-client-san-verification",
	"discovery-endpoints", "discovery-token", "discovery-dial-timeout", "discovery-request-timeout", "discovery-keepalive-time",
	"discovery-keepalive-timeout", "discovery-cert", "discovery-key", "discovery-cacert", "discovery-insecure-transport",
	"discovery-insecure-skip-tls-verify", "discovery-user", "discovery-password",
}

// ConfigFileKeys are the top-level keys of etcd's configuration file
// that `etckit serve --config-file` reads (etcd 3.7's, and 3.6's
// experimental ones).
func ConfigFileKeys() []string {
	cmd, _ := newCommand()
	keys := slices.Clone(fileKeyOnly)
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if !slices.Contains(notFileKeys, fl.Name) && !slices.Contains(ignoredFlags, fl.Name) {
			keys = append(keys, fl.Name)
		}
	})
	slices.Sort(keys)
	return keys
}

// applyConfigFile sets fs's flags from etcd's YAML file at path, with the
// defaults etcd's file mode has where they differ from its flags'.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := ConfigFileKeys()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if !slices.Contains(keys, k) {
			continue // etcd ignores keys it does not know
		}
		if _, nested := fileNested[k]; nested {
			if err := applyFileSection(fs, k, v); err != nil {
				return fmt.Errorf("config file %s: %w", path, err)
			}
			continue
		}
		if k == "grpc-additional-server-options" {
			continue
		}
		if err := setFromFile(fs, k, k, v); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
	}
	// etcd's file mode: the advertised client URL is its default
	// (http://localhost:2379) unless given; an empty cluster state is
	// "new"; a zero self-signed-cert-validity is 1.
	if _, ok := m["advertise-client-urls"]; !ok {
		if err := fs.Set("advertise-client-urls", "http://localhost:2379"); err != nil {
			return err
		}
	}
	if v, _ := m["initial-cluster-state"].(string); v == "" {
		_ = fs.Set("initial-cluster-state", "new")
	}
	if n, ok := m["self-signed-cert-validity"].(json.Number); ok && n.String() == "0" {
		_ = fs.Set("self-signed-cert-validity", "1")
	}
	return nil
}

func applyFileSection(fs *pflag.FlagSet, section string, v any) error {
	if v == nil {
		return nil
	}
	sm, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("invalid %s", section)
	}
	for _, k := range slices.Sorted(maps.Keys(sm)) {
		if sub := section + "." + k; fileNested[sub] != nil {
			if err := applyFileSection(fs, sub, sm[k]); err != nil {
				return err
			}
			continue
		}
		flag, known := fileNested[section][k]
		if !known || flag == "" {
			continue
		}
		if err := setFromFile(fs, section+"."+k, flag, sm[k]); err != nil {
			return err
		}
	}
	return nil
}

// setFromFile sets flag from the file's value v at key, checked against
// the type etcd's field has.
func setFromFile(fs *pflag.FlagSet, key, flag string, v any) error {
	fl := fs.Lookup(flag)
	if fl == nil || v == nil {
		return nil
	}
	bad := func(want string) error {
		return fmt.Errorf("%s: want %s, got %v (%T)", key, want, v, v)
	}
	var s string
	switch fl.Value.Type() {
	case "duration":
		n, ok := v.(json.Number)
		if !ok {
			return bad("a duration in integer nanoseconds (etcd's file takes no duration strings)")
		}
		d, err := n.Int64()
		if err != nil {
			return bad("a duration in integer nanoseconds")
		}
		s = time.Duration(d).String()
	case "bool":
		b, ok := v.(bool)
		if !ok {
			return bad("a boolean")
		}
		s = fmt.Sprint(b)
	case "int", "int64", "uint", "uint32", "uint64":
		n, ok := v.(json.Number)
		if !ok {
			return bad("a number")
		}
		s = n.String()
	case "stringSlice":
		if slices.Contains(fileArrayKeys, key) || strings.HasSuffix(key, ".allowed-cn") || strings.HasSuffix(key, ".allowed-hostname") || key == "discovery-config.endpoints" {
			arr, ok := v.([]any)
			if !ok {
				return bad("a list of strings")
			}
			var parts []string
			for _, e := range arr {
				es, ok := e.(string)
				if !ok {
					return bad("a list of strings")
				}
				parts = append(parts, es)
			}
			// A fresh list, not appended to the default.
			if sv, ok := fl.Value.(pflag.SliceValue); ok {
				if err := sv.Replace(parts); err != nil {
					return fmt.Errorf("%s: %w", key, err)
				}
				fl.Changed = true
				return nil
			}
			s = strings.Join(parts, ",")
			break
		}
		fallthrough
	default:
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String() // sigs.k8s.io/yaml turns a scalar into a string field's text
		case bool:
			s = fmt.Sprint(x)
		default:
			return bad("a string")
		}
	}
	if err := fs.Set(flag, s); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}
