package server

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// printVersion is `etcd --version`, which etcd's e2e framework parses
// (etcd Version, Git SHA, Go Version, Go OS/Arch).
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "etcd Version: %s\nGit SHA: etckit\nGo Version: %s\nGo OS/Arch: %s/%s\n",
		Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// PrintVersion writes what `etckit --version` and `etckit serve
// --version` print: etcd's --version lines, etckit being etcd Version
// engine.EtcdVersion.
func PrintVersion(w io.Writer) { printVersion(w) }

// ConfigFromArgs is what `etckit serve` makes of its command line args
// and environment (os.Environ form, "KEY=value"), as etcd reads its own
// (etcdmain config.parse): a --config-file (or ETCD_CONFIG_FILE) replaces
// every other flag and variable; else ETCD_* variables set the flags not
// given. Logs go to stderr. It starts nothing.
func ConfigFromArgs(args, environ []string, stderr io.Writer) (Config, error) {
	cmd, f := newCommand()
	cmd.SetErr(stderr)
	if err := cmd.ParseFlags(NormalizeArgs(args)); err != nil {
		return Config{}, err
	}
	if rest := cmd.Flags().Args(); len(rest) > 0 {
		return Config{}, fmt.Errorf("%q is not a valid flag", rest[0])
	}
	return f.load(cmd, environ)
}

// load is ConfigFromArgs past the parsing of args.
func (f *flags) load(cmd *cobra.Command, environ []string) (Config, error) {
	path := f.compat.configFile
	if path == "" {
		path, _ = lookupEnv(environ, "ETCD_CONFIG_FILE")
	}
	if path != "" {
		fc, ff := newCommand()
		fc.SetErr(cmd.ErrOrStderr())
		fc.SetOut(cmd.OutOrStdout())
		if err := applyConfigFile(fc.Flags(), path); err != nil {
			return Config{}, err
		}
		cfg, err := ff.config(fc)
		if err != nil {
			return Config{}, err
		}
		cfg.Logger.Info("loaded server configuration, other configuration command line flags and environment variables will be ignored if provided", "path", path)
		return cfg, nil
	}
	// etcd logs what it does with the environment before the configured
	// logger exists, at info level on stderr.
	lg := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
	if err := setFlagsFromEnv(cmd.Flags(), environ, lg); err != nil {
		return Config{}, err
	}
	return f.config(cmd)
}

func lookupEnv(environ []string, key string) (string, bool) {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// setFlagsFromEnv is etcd's flags.SetFlagsFromEnv with prefix ETCD:
// ETCD_<NAME> (upper case, dashes as underscores) sets each flag not
// given on the command line, when not empty; a variable for a flag that
// was given is an error (etcd exits: "conflicting environment variable is
// shadowed by corresponding command-line flag"); other ETCD_ variables are
// warned about. ETCD_VERSION is never read (etcd warns "cannot set special
// environment variable").
func setFlagsFromEnv(fs *pflag.FlagSet, environ []string, lg *slog.Logger) error {
	env := map[string]string{}
	var order []string
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			lg.Warn("found invalid environment variable", "environment-variable", kv)
			continue
		}
		if _, dup := env[k]; !dup {
			order = append(order, k)
		}
		env[k] = v
	}
	if v, ok := env["ETCD_VERSION"]; ok && v != "" {
		lg.Warn("cannot set special environment variable", "key", "ETCD_VERSION", "value", v)
		delete(env, "ETCD_VERSION")
	}
	given := map[string]bool{}
	used := map[string]bool{}
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		key := flagToEnv(fl.Name)
		if fl.Changed {
			given[key] = true
			return
		}
		if fl.Name == "version" {
			return
		}
		v := env[key]
		if v == "" {
			return
		}
		used[key] = true
		if serr := fs.Set(fl.Name, v); serr != nil && err == nil {
			err = fmt.Errorf("invalid value %q for %s: %w", v, key, serr)
			return
		}
		lg.Info("recognized and used environment variable", "variable-name", key, "variable-value", v)
	})
	if err != nil {
		return err
	}
	for _, k := range order {
		if _, ok := env[k]; !ok || used[k] {
			continue
		}
		if given[k] {
			return fmt.Errorf("conflicting environment variable %q is shadowed by corresponding command-line flag (either unset environment variable or disable flag)", k)
		}
		if strings.HasPrefix(k, "ETCD_") {
			lg.Warn("unrecognized environment variable", "environment-variable", k+"="+env[k])
		}
	}
	return nil
}

// flagToEnv is etcd's flags.FlagToEnv("ETCD", name).
func flagToEnv(name string) string {
	return "ETCD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// NormalizeArgs rewrites etcd's single-dash long flags (-name x, which Go's
// flag package takes as etcd does) as pflag's --name x; other args stay.
func NormalizeArgs(args []string) []string {
	cmd, _ := newCommand()
	fs := cmd.Flags()
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(a) > 1 {
			name, _, _ := strings.Cut(a[1:], "=")
			if fs.Lookup(name) != nil && (len(name) > 1 || fs.ShorthandLookup(name) == nil) {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}
