package auth

import (
	"fmt"
	"strings"
)

// NewTokenProvider makes the provider --auth-token spec names, as etcd's
// auth.NewTokenProvider: spec is "type[,key=value]*"; type "simple"
// (o.TTL, o.WaitIndex; options are ignored), "jwt" (options sign-method,
// pub-key, priv-key, ttl) or "" (no tokens: Authenticate always fails).
// A malformed spec or an unknown type is ErrInvalidAuthOpts; a JWT
// provider's key problems are ErrMissingKey, ErrKeyMismatch or the key
// parser's error. Errors wrap those values (errors.Is).
func NewTokenProvider(spec string, o TokenOptions) (TokenProvider, error) {
	typ, opts, err := parseTokenOpts(spec)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "simple":
		if o.Warn != nil {
			o.Warn("simple token is not cryptographically signed")
		}
		return newSimpleTokenProvider(o), nil
	case "jwt":
		p, err := newJWTProvider(opts, o.Warn)
		if err != nil {
			return nil, err
		}
		return p, nil
	case "":
		return nopTokenProvider{}, nil
	default:
		return nil, fmt.Errorf("%w: unknown token type %q", ErrInvalidAuthOpts, typ)
	}
}

// parseTokenOpts splits an --auth-token value as etcd's decomposeOpts: the
// type is what comes before the first ','; every further ','-separated
// option must be exactly one "key=value" (so neither may hold '=' or ','),
// and a key may appear once. Option values are not logged: an option is
// named by its position and key only.
func parseTokenOpts(spec string) (typ string, opts map[string]string, err error) {
	parts := strings.Split(spec, ",")
	opts = make(map[string]string, len(parts)-1)
	for i, opt := range parts[1:] {
		kv := strings.Split(opt, "=")
		if len(kv) != 2 {
			return "", nil, fmt.Errorf("%w: option %d of --auth-token is not key=value", ErrInvalidAuthOpts, i+1)
		}
		if _, dup := opts[kv[0]]; dup {
			return "", nil, fmt.Errorf("%w: option %q given twice in --auth-token", ErrInvalidAuthOpts, kv[0])
		}
		opts[kv[0]] = kv[1]
	}
	return parts[0], opts, nil
}
