package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// This file holds the part of etcd's command line that etckit takes for
// compatibility: every flag of etcd 3.7.3 and every flag etcd 3.6.8 has
// that 3.7 removed (server/testdata/etcd-flags-*.txt, checked against
// etcd's own code by the interop tests) is defined on `etckit serve`.
// Most act as in etcd; those in noEffectFlags tune something etckit does
// not have and are accepted with a logged warning (README's flag table
// lists them with these reasons; TestREADMEFlagTable keeps it in step).

// noEffectFlags: flag -> why it has no effect in etckit.
var noEffectFlags = map[string]string{
	"backend-bbolt-freelist-type":        "etckit's backend keeps bbolt's default freelist; the file format is the same with either",
	"enable-distributed-tracing":         "no OpenTelemetry tracing",
	"distributed-tracing-address":        "no OpenTelemetry tracing",
	"distributed-tracing-instance-id":    "no OpenTelemetry tracing",
	"distributed-tracing-sampling-rate":  "no OpenTelemetry tracing",
	"distributed-tracing-service-name":   "no OpenTelemetry tracing",
	"enable-log-rotation":                "no log rotation; logs go to --log-outputs",
	"log-rotation-config-json":           "no log rotation; logs go to --log-outputs",
	"memory-mlock":                       "etckit does not mlock its pages",
	"warning-apply-duration":             "no slow-apply warnings",
	"v2-deprecation":                     "etcd 3.7 ignores it too and enforces the default; etckit has no v2 store",
	"discovery-fallback":                 "no discovery (see --discovery-endpoints); 'proxy' is refused as etcd refuses it",
	"discovery-srv-name":                 "no DNS discovery (--discovery-srv is refused when set)",
	"discovery-dial-timeout":             "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-request-timeout":          "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-keepalive-time":           "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-keepalive-timeout":        "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-insecure-transport":       "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-insecure-skip-tls-verify": "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-cert":                     "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-key":                      "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-cacert":                   "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-user":                     "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-password":                 "no v3 discovery (--discovery-endpoints is refused when set)",
	"discovery-proxy":                    "etcd 3.6's v2 discovery proxy; no discovery (--discovery is refused when set)",

	"experimental-txn-mode-write-with-shared-buffer": "sets feature gate TxnModeWriteWithSharedBuffer, which etckit accepts without effect",
}

// refusedWhenSet: flags whose non-empty value would bootstrap the member
// through a discovery service etckit does not have; ignoring them would
// start a different cluster than asked, so they are refused.
var refusedWhenSet = map[string]string{
	"discovery-endpoints": "v3 discovery is not supported by etckit; bootstrap with --initial-cluster",
	"discovery-token":     "v3 discovery is not supported by etckit; bootstrap with --initial-cluster",
	"discovery-srv":       "DNS discovery is not supported by etckit; bootstrap with --initial-cluster",
	"discovery":           "v2 discovery is not supported by etckit; bootstrap with --initial-cluster",
}

// ignoredFlags are etcd's legacy flags (etcdmain's "ignored" list): etcd
// takes them with any value or none and warns "flag is no longer
// supported - ignoring"; so does etckit.
var ignoredFlags = []string{
	"cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
	"max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout",
	"retry-interval", "snapshot", "v", "vv", "test.coverprofile", "test.outputdir",
}

// experimentalRenames are etcd 3.6's experimental flags that 3.7 renamed
// (3.6's embed experimentalFlagMigrationMap), with the deprecation warning
// etcd 3.6 logs for each (etcdmain deprecatedFlags). Setting both names
// is an error, as in etcd 3.6.
var experimentalRenames = map[string]struct{ to, warning string }{
	"experimental-compact-hash-check-time":              {"compact-hash-check-time", "--experimental-compact-hash-check-time is deprecated in 3.6 and will be decommissioned in 3.7. Use '--compact-hash-check-time' instead."},
	"experimental-corrupt-check-time":                   {"corrupt-check-time", "--experimental-corrupt-check-time is deprecated in v3.6 and will be decommissioned in v3.7. Use '--corrupt-check-time' instead."},
	"experimental-compaction-batch-limit":               {"compaction-batch-limit", "--experimental-compaction-batch-limit is deprecated in v3.6 and will be decommissioned in v3.7. Use '--compaction-batch-limit' instead."},
	"experimental-watch-progress-notify-interval":       {"watch-progress-notify-interval", "--experimental-watch-progress-notify-interval is deprecated in v3.6 and will be decommissioned in v3.7. Use '--watch-progress-notify-interval' instead."},
	"experimental-warning-apply-duration":               {"warning-apply-duration", "--experimental-warning-apply-duration is deprecated in v3.6 and will be decommissioned in v3.7. Use '--warning-apply-duration' instead."},
	"experimental-bootstrap-defrag-threshold-megabytes": {"bootstrap-defrag-threshold-megabytes", "--experimental-bootstrap-defrag-threshold-megabytes is deprecated in v3.6 and will be decommissioned in v3.7. Use '--bootstrap-defrag-threshold-megabytes' instead."},
	"experimental-memory-mlock":                         {"memory-mlock", "--experimental-memory-mlock is deprecated in v3.6 and will be decommissioned in v3.7. Use '--memory-mlock' instead."},
	"experimental-snapshot-catchup-entries":             {"snapshot-catchup-entries", "--experimental-snapshot-catchup-entries is deprecated in v3.6 and will be decommissioned in v3.7. Use '--snapshot-catchup-entries' instead."},
	"experimental-compaction-sleep-interval":            {"compaction-sleep-interval", "--experimental-compaction-sleep-interval is deprecated in v3.6 and will be decommissioned in v3.7. Use 'compaction-sleep-interval' instead."},
	"experimental-downgrade-check-time":                 {"downgrade-check-time", "--experimental-downgrade-check-time is deprecated in v3.6 and will be decommissioned in v3.7. Use '--downgrade-check-time' instead."},
	"experimental-peer-skip-client-san-verification":    {"peer-skip-client-san-verification", "--experimental-peer-skip-client-san-verification is deprecated in v3.6 and will be decommissioned in v3.7. Use '--peer-skip-client-san-verification' instead."},
	"experimental-enable-distributed-tracing":           {"enable-distributed-tracing", "--experimental-enable-distributed-tracing is deprecated in 3.6 and will be decommissioned in 3.7. Use --enable-distributed-tracing instead."},
	"experimental-distributed-tracing-address":          {"distributed-tracing-address", "--experimental-distributed-tracing-address is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-address instead."},
	"experimental-distributed-tracing-service-name":     {"distributed-tracing-service-name", "--experimental-distributed-tracing-service-name is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-service-name instead."},
	"experimental-distributed-tracing-instance-id":      {"distributed-tracing-instance-id", "--experimental-distributed-tracing-instance-id is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-instance-id instead."},
	"experimental-distributed-tracing-sampling-rate":    {"distributed-tracing-sampling-rate", "--experimental-distributed-tracing-sampling-rate is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-sampling-rate instead."},
}

// deprecatedWarnings are etcd 3.7's deprecation warnings (etcdmain
// deprecatedFlags) for flags that still work.
var deprecatedWarnings = map[string]string{
	"max-snapshots":  "--max-snapshots is deprecated in 3.6 and will be decommissioned in 3.8.",
	"v2-deprecation": "--v2-deprecation is deprecated and scheduled for removal in v3.8. The default value is enforced, ignoring user input.",
	"experimental-compact-hash-check-enabled":        "--experimental-compact-hash-check-enabled is deprecated in 3.6 and will be decommissioned in 3.7. Use '--feature-gates=CompactHashCheck=true' instead.",
	"experimental-txn-mode-write-with-shared-buffer": "--experimental-txn-mode-write-with-shared-buffer is deprecated in v3.6 and will be decommissioned in v3.7. Use '--feature-gates=TxnModeWriteWithSharedBuffer=true' instead.",
}

// flagStatus is a flag's line in README's table: "implemented" or "no
// effect", and the reason for the latter. An experimental name shares
// its new name's status.
func flagStatus(name string) (status, reason string) {
	if r, ok := experimentalRenames[name]; ok {
		s, why := flagStatus(r.to)
		if s != "implemented" {
			return s, why
		}
		return "implemented", ""
	}
	if why, ok := noEffectFlags[name]; ok {
		return "no effect", why
	}
	if why, ok := refusedWhenSet[name]; ok {
		return "refused when set", why
	}
	if slices.Contains(ignoredFlags, name) {
		return "no effect", "a legacy flag etcd ignores too ('flag is no longer supported - ignoring')"
	}
	return "implemented", ""
}

// compatFlags are the values of the flags defined in addCompatFlags.
type compatFlags struct {
	configFile                         string
	backendBatchInterval               time.Duration
	backendBatchLimit                  int
	compactionBatchLimit               int
	compactionSleepInterval            time.Duration
	logger, logFormat                  string
	logOutputs                         []string
	raftReadTimeout, raftWriteTimeout  time.Duration
	socketReusePort, socketReuseAddr   bool
	enablePprof                        bool
	cors, hostWhitelist                []string
	autoCompactionMode                 string
	autoCompactionRetention            string
	compactHashCheckTime               time.Duration
	corruptCheckTime                   time.Duration
	warningUnaryRequestDuration        time.Duration
	experimentalWarningUnaryRequestDur time.Duration
	discoveryFallback                  string
	v2Deprecation                      string
	bootstrapDefragThresholdMB         uint
}

// addCompatFlags defines the etcd flags cmd.go does not, with etcd's
// defaults (server/testdata/etcd-flags-v3.7.3.txt).
func addCompatFlags(fs *pflag.FlagSet, c *compatFlags) {
	fs.StringVar(&c.configFile, "config-file", "", "Path to the server configuration file (etcd's YAML). Note that if a configuration file is provided, other command line flags and environment variables will be ignored.")
	fs.DurationVar(&c.backendBatchInterval, "backend-batch-interval", 0, "BackendBatchInterval is the maximum time before commit the backend transaction.")
	fs.IntVar(&c.backendBatchLimit, "backend-batch-limit", 0, "BackendBatchLimit is the maximum operations before commit the backend transaction.")
	fs.IntVar(&c.compactionBatchLimit, "compaction-batch-limit", 0, "Sets the maximum revisions deleted in each compaction batch.")
	fs.DurationVar(&c.compactionSleepInterval, "compaction-sleep-interval", 0, "Sets the sleep interval between each compaction batch.")
	fs.StringVar(&c.logger, "logger", "zap", "Currently only supports 'zap' for structured logging.")
	fs.StringVar(&c.logFormat, "log-format", "json", "Configures log format. Only supports json, console. Default is 'json'.")
	fs.StringSliceVar(&c.logOutputs, "log-outputs", []string{"default"}, "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of comma separated output targets.")
	fs.DurationVar(&c.raftReadTimeout, "raft-read-timeout", 5*time.Second, "Read timeout set on each rafthttp connection")
	fs.DurationVar(&c.raftWriteTimeout, "raft-write-timeout", 5*time.Second, "Write timeout set on each rafthttp connection")
	fs.BoolVar(&c.socketReusePort, "socket-reuse-port", false, "Enable to set socket option SO_REUSEPORT on listeners allowing rebinding of a port already in use.")
	fs.BoolVar(&c.socketReuseAddr, "socket-reuse-address", false, "Enable to set socket option SO_REUSEADDR on listeners allowing binding to an address in `TIME_WAIT` state.")
	fs.BoolVar(&c.enablePprof, "enable-pprof", false, "Enable runtime profiling data via HTTP server. Address is at client URL + \"/debug/pprof/\"")
	fs.StringSliceVar(&c.cors, "cors", []string{"*"}, "Comma-separated white list of origins for CORS, or cross-origin resource sharing, (empty or * means allow all)")
	fs.StringSliceVar(&c.hostWhitelist, "host-whitelist", []string{"*"}, "Comma-separated acceptable hostnames from HTTP client requests, if server is not secure (empty means allow all).")
	fs.StringVar(&c.autoCompactionMode, "auto-compaction-mode", "periodic", "interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention.")
	fs.StringVar(&c.autoCompactionRetention, "auto-compaction-retention", "0", "Auto compaction retention for mvcc key value store. 0 means disable auto compaction.")
	fs.DurationVar(&c.compactHashCheckTime, "compact-hash-check-time", time.Minute, "Duration of time between leader checks followers compaction hashes.")
	fs.DurationVar(&c.corruptCheckTime, "corrupt-check-time", 0, "Duration of time between cluster corruption check passes.")
	fs.DurationVar(&c.warningUnaryRequestDuration, "warning-unary-request-duration", 300*time.Millisecond, "Time duration after which a warning is generated if a unary request takes more time.")
	fs.DurationVar(&c.experimentalWarningUnaryRequestDur, "experimental-warning-unary-request-duration", 0, "Time duration after which a warning is generated if a unary request takes more time. Deprecated in v3.6 and will be decommissioned in v3.7. Use --warning-unary-request-duration instead.")
	fs.StringVar(&c.discoveryFallback, "discovery-fallback", "exit", `Valid values include ["exit" "proxy"]`)
	fs.StringVar(&c.v2Deprecation, "v2-deprecation", "write-only", `v2store deprecation stage: ["write-only" "write-only-drop-data" "gone"]. Deprecated and scheduled for removal in v3.8. The default value is enforced, ignoring user input.`)

	// Accepted, no effect (noEffectFlags), with etcd's defaults.
	fs.String("backend-bbolt-freelist-type", "", "BackendFreelistType specifies the type of freelist that boltdb backend uses(array and map are supported types)")
	fs.UintVar(&c.bootstrapDefragThresholdMB, "bootstrap-defrag-threshold-megabytes", 0, "Enable the defrag during etcd server bootstrap on condition that it will free at least the provided threshold of disk space. Needs to be set to non-zero value to take effect.")
	fs.Bool("enable-distributed-tracing", false, "Enable distributed tracing using OpenTelemetry Tracing.")
	fs.String("distributed-tracing-address", "localhost:4317", "Address for distributed tracing used for OpenTelemetry Tracing (if enabled with enable-distributed-tracing flag).")
	fs.String("distributed-tracing-service-name", "etcd", "Configures service name for distributed tracing to be used to define service name for OpenTelemetry Tracing (if enabled with enable-distributed-tracing flag). 'etcd' is the default service name. Use the same service name for all instances of etcd.")
	fs.String("distributed-tracing-instance-id", "", "Configures service instance ID for distributed tracing to be used to define service instance ID key for OpenTelemetry Tracing (if enabled with enable-distributed-tracing flag). There is no default value set. This ID must be unique per etcd instance.")
	fs.Int("distributed-tracing-sampling-rate", 0, "Number of samples to collect per million spans for OpenTelemetry Tracing (if enabled with enable-distributed-tracing flag).")
	fs.Bool("enable-log-rotation", false, "Enable log rotation of a single log-outputs file target.")
	fs.String("log-rotation-config-json", `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`, "Configures log rotation if enabled with a JSON logger config. Default: MaxSize=100(MB), MaxAge=0(days,no limit), MaxBackups=0(no limit), LocalTime=false(UTC), Compress=false(gzip)")
	fs.Bool("memory-mlock", false, "Enable to enforce etcd pages (in particular bbolt) to stay in RAM.")
	fs.Duration("warning-apply-duration", 100*time.Millisecond, "Time duration after which a warning is generated if watch progress takes more time.")
	fs.String("discovery-srv", "", "DNS domain used to bootstrap initial cluster.")
	fs.String("discovery-srv-name", "", "Service name to query when using DNS discovery.")
	fs.StringSlice("discovery-endpoints", nil, "V3 discovery: List of gRPC endpoints of the discovery service.")
	fs.String("discovery-token", "", "V3 discovery: discovery token for the etcd cluster to be bootstrapped.")
	fs.Duration("discovery-dial-timeout", 2*time.Second, "V3 discovery: dial timeout for client connections.")
	fs.Duration("discovery-request-timeout", 5*time.Second, "V3 discovery: timeout for discovery requests (excluding dial timeout).")
	fs.Duration("discovery-keepalive-time", 2*time.Second, "V3 discovery: keepalive time for client connections.")
	fs.Duration("discovery-keepalive-timeout", 6*time.Second, "V3 discovery: keepalive timeout for client connections.")
	fs.Bool("discovery-insecure-transport", true, "V3 discovery: disable transport security for client connections.")
	fs.Bool("discovery-insecure-skip-tls-verify", false, "V3 discovery: skip server certificate verification (CAUTION: this option should be enabled only for testing purposes).")
	fs.String("discovery-cert", "", "V3 discovery: identify secure client using this TLS certificate file.")
	fs.String("discovery-key", "", "V3 discovery: identify secure client using this TLS key file.")
	fs.String("discovery-cacert", "", "V3 discovery: verify certificates of TLS-enabled secure servers using this CA bundle.")
	fs.String("discovery-user", "", "V3 discovery: username[:password] for authentication (prompt if password is not supplied).")
	fs.String("discovery-password", "", "V3 discovery: password for authentication (if this option is used, --user option shouldn't include password).")
	fs.String("discovery", "", "Discovery URL used to bootstrap the cluster for v2 discovery (etcd 3.6). Refused by etckit.")
	fs.String("discovery-proxy", "", "HTTP proxy to use for traffic to discovery service (etcd 3.6's v2 discovery).")

	// etcd 3.6's experimental names (experimentalRenames), same types and
	// 3.6's defaults.
	fs.Uint("experimental-bootstrap-defrag-threshold-megabytes", 0, "Deprecated in v3.6; use --bootstrap-defrag-threshold-megabytes.")
	fs.Duration("experimental-compact-hash-check-time", time.Minute, "Deprecated in v3.6; use --compact-hash-check-time.")
	fs.Int("experimental-compaction-batch-limit", 0, "Deprecated in v3.6; use --compaction-batch-limit.")
	fs.Duration("experimental-compaction-sleep-interval", 0, "Deprecated in v3.6; use --compaction-sleep-interval.")
	fs.Duration("experimental-corrupt-check-time", 0, "Deprecated in v3.6; use --corrupt-check-time.")
	fs.String("experimental-distributed-tracing-address", "localhost:4317", "Deprecated in v3.6; use --distributed-tracing-address.")
	fs.String("experimental-distributed-tracing-instance-id", "", "Deprecated in v3.6; use --distributed-tracing-instance-id.")
	fs.Int("experimental-distributed-tracing-sampling-rate", 0, "Deprecated in v3.6; use --distributed-tracing-sampling-rate.")
	fs.String("experimental-distributed-tracing-service-name", "etcd", "Deprecated in v3.6; use --distributed-tracing-service-name.")
	fs.Bool("experimental-enable-distributed-tracing", false, "Deprecated in v3.6; use --enable-distributed-tracing.")
	fs.Bool("experimental-memory-mlock", false, "Deprecated in v3.6; use --memory-mlock.")
	fs.Duration("experimental-warning-apply-duration", 0, "Deprecated in v3.6; use --warning-apply-duration.")
	fs.Duration("experimental-watch-progress-notify-interval", 0, "Deprecated in v3.6; use --watch-progress-notify-interval.")
	fs.Bool("experimental-stop-grpc-service-on-defrag", false, "Deprecated in v3.6; use '--feature-gates=StopGRPCServiceOnDefrag=true'.")
	fs.Bool("experimental-initial-corrupt-check", false, "Deprecated in v3.6; use '--feature-gates=InitialCorruptCheck=true'.")
	fs.Bool("experimental-compact-hash-check-enabled", false, "Deprecated in v3.6; use '--feature-gates=CompactHashCheck=true'.")
	fs.Bool("experimental-txn-mode-write-with-shared-buffer", true, "Deprecated in v3.6; use '--feature-gates=TxnModeWriteWithSharedBuffer=true'.")

	for _, name := range ignoredFlags {
		fs.Var(&ignoredFlag{}, name, "")
		fs.Lookup(name).NoOptDefVal = "true"
		fs.Lookup(name).Hidden = true
	}
}

// ignoredFlag is etcd's flags.IgnoredFlag: any value, or none.
type ignoredFlag struct{ set bool }

func (f *ignoredFlag) Set(string) error { f.set = true; return nil }
func (f *ignoredFlag) String() string   { return "" }
func (f *ignoredFlag) Type() string     { return "ignored" }

// applyCompat is the part of flags.config for the flags above: etcd's
// renames, checks and warnings. It runs before the rest reads the values.
func applyCompat(fs *pflag.FlagSet, lg *slog.Logger) error {
	for _, old := range slices.Sorted(maps.Keys(experimentalRenames)) {
		r := experimentalRenames[old]
		if !fs.Changed(old) {
			continue
		}
		if fs.Changed(r.to) {
			return fmt.Errorf("cannot set --%s and --%s at the same time, please use --%s only", old, r.to, r.to)
		}
		lg.Warn(r.warning)
		if err := fs.Set(r.to, fs.Lookup(old).Value.String()); err != nil {
			return fmt.Errorf("--%s: %w", old, err)
		}
	}
	if fs.Changed("experimental-warning-unary-request-duration") {
		if fs.Changed("warning-unary-request-duration") {
			return errors.New("both --experimental-warning-unary-request-duration and --warning-unary-request-duration flags are set. Use only --warning-unary-request-duration")
		}
		lg.Warn("--experimental-warning-unary-request-duration is deprecated, and will be decommissioned in v3.7. Use --warning-unary-request-duration instead.")
		if err := fs.Set("warning-unary-request-duration", fs.Lookup("experimental-warning-unary-request-duration").Value.String()); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(deprecatedWarnings)) {
		if fs.Changed(name) {
			lg.Warn(deprecatedWarnings[name])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(refusedWhenSet)) {
		if fl := fs.Lookup(name); fl != nil && fl.Changed {
			if v := fl.Value.String(); v != "" && v != "[]" {
				return fmt.Errorf("--%s=%s: %s", name, v, refusedWhenSet[name])
			}
		}
	}
	if v := fs.Lookup("discovery-fallback").Value.String(); v != "exit" {
		if v == "proxy" {
			return fmt.Errorf("v2 proxy is deprecated, and --discovery-fallback can't be configured as %q", v)
		}
		return fmt.Errorf(`invalid value %q for --discovery-fallback: valid values are ["exit" "proxy"]`, v)
	}
	switch v := fs.Lookup("v2-deprecation").Value.String(); v {
	case "write-only", "write-only-drop-data", "gone", "not-yet":
	default:
		return fmt.Errorf(`invalid value %q for --v2-deprecation: valid values are ["not-yet" "write-only" "write-only-drop-data" "gone"]`, v)
	}
	if cors, _ := fs.GetStringSlice("cors"); len(cors) > 0 {
		for _, o := range cors {
			if o == "*" {
				continue
			}
			if err := checkURL(o); err != nil {
				return fmt.Errorf("--cors %q: %w", o, err)
			}
		}
	}
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		if !fl.Changed || err != nil {
			return
		}
		if slices.Contains(ignoredFlags, fl.Name) {
			lg.Warn("flag is no longer supported - ignoring", "flag-name", fl.Name)
			return
		}
		if s, why := flagStatus(fl.Name); s == "no effect" {
			lg.Warn("flag is accepted for etcd compatibility and has no effect in etckit", "flag-name", fl.Name, "value", fl.Value.String(), "reason", why)
		}
	})
	if d := fs.Lookup("compact-hash-check-time").Value.String(); d != "" {
		if v, _ := fs.GetDuration("compact-hash-check-time"); v <= 0 {
			return fmt.Errorf("--compact-hash-check-time must be >0 (set to %v)", v)
		}
	}
	return err
}

// newLogger is etcd's --logger, --log-level, --log-format and
// --log-outputs: zap only (etckit logs JSON through log/slog, as etcd's
// zap JSON lines), json or console, and outputs "default"/"stderr",
// "stdout" or file paths (appended to). "default" is stderr (etckit has no
// journald). stderr is what the command writes to.
func newLogger(logger, level, format string, outputs []string, stderr io.Writer) (*slog.Logger, error) {
	if logger != "zap" {
		return nil, fmt.Errorf("unknown logger option %q", logger)
	}
	var l slog.Level
	switch strings.ToLower(level) {
	case "panic", "fatal", "dpanic":
		l = slog.LevelError + 4
	default:
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("--log-level %q: %w", level, err)
		}
	}
	var ws []io.Writer
	seen := map[string]bool{}
	for _, o := range outputs {
		if seen[o] {
			continue
		}
		seen[o] = true
		switch o {
		case "default", "stderr", "":
			if !slices.Contains(ws, stderr) {
				ws = append(ws, stderr)
			}
		case "stdout":
			ws = append(ws, os.Stdout)
		case "systemd/journal":
			return nil, errors.New("--log-outputs=systemd/journal: etckit has no journald output; use stderr")
		default:
			fl, err := os.OpenFile(o, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
			if err != nil {
				return nil, fmt.Errorf("--log-outputs: %w", err)
			}
			ws = append(ws, fl) // open for the process's life, as etcd's zap sinks
		}
	}
	if len(ws) == 0 {
		ws = append(ws, stderr)
	}
	w := io.MultiWriter(ws...)
	if len(ws) == 1 {
		w = ws[0]
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "console":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("unsupported log format: %s", format)
	}
}

// checkURL is etcd's types.NewURLs check of one URL (--cors entries).
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "http", "https":
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return fmt.Errorf(`URL address does not have the form "host:port": %s`, s)
		}
	case "unix", "unixs":
	default:
		return fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", s)
	}
	if u.Path != "" {
		return fmt.Errorf("URL must not contain a path: %s", s)
	}
	return nil
}
