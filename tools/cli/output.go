package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/spf13/cobra"
)

// Format is an output format selected with -w/--write-out.
type Format string

// The formats every tool offers. A tool may add its own (dump-logs adds
// "etcd", the etcd-dump-logs layout).
const (
	Simple Format = "simple" // line-oriented text for people and grep
	Table  Format = "table"  // tablewriter tables
	JSON   Format = "json"   // one JSON object per line, stable field names
)

// FormatFlag is the value of a -w/--write-out flag restricted to a set of
// formats (it implements pflag.Value).
type FormatFlag struct {
	Value   Format
	Allowed []Format
}

// AddFormatFlag registers -w/--write-out on cmd with the default def and the
// allowed formats.
func AddFormatFlag(cmd *cobra.Command, f *FormatFlag, def Format, allowed ...Format) {
	f.Value, f.Allowed = def, allowed
	cmd.Flags().VarP(f, "write-out", "w", "output format: "+f.Type())
}

func (f *FormatFlag) String() string { return string(f.Value) }

// Set implements pflag.Value.
func (f *FormatFlag) Set(s string) error {
	if !slices.Contains(f.Allowed, Format(s)) {
		return fmt.Errorf("unknown format %q (want %s)", s, f.Type())
	}
	f.Value = Format(s)
	return nil
}

// Type implements pflag.Value.
func (f *FormatFlag) Type() string {
	s := make([]string, len(f.Allowed))
	for i, a := range f.Allowed {
		s[i] = string(a)
	}
	return strings.Join(s, "|")
}

// JSONLine writes v as one line of JSON. HTML escaping is off, so keys such
// as "/a<b>" stay readable.
func JSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// Object is a JSON object whose fields keep the order they were added in,
// so that JSON lines are stable and diffable.
type Object struct {
	keys []string
	vals []any
}

// Set adds (or replaces) a field.
func (o *Object) Set(key string, v any) *Object {
	if i := slices.Index(o.keys, key); i >= 0 {
		o.vals[i] = v
		return o
	}
	o.keys = append(o.keys, key)
	o.vals = append(o.vals, v)
	return o
}

// Get returns a field's value.
func (o *Object) Get(key string) (any, bool) {
	if i := slices.Index(o.keys, key); i >= 0 {
		return o.vals[i], true
	}
	return nil, false
}

// Keys returns the field names in order.
func (o *Object) Keys() []string { return o.keys }

// MarshalJSON implements json.Marshaler.
func (o *Object) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		var sb strings.Builder
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(o.vals[i]); err != nil {
			return nil, err
		}
		b.WriteString(strings.TrimSuffix(sb.String(), "\n"))
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// NewTable returns a tablewriter table on w with etckit's settings: header
// as given (not upper-cased), no cell wrapping, left-aligned cells.
func NewTable(w io.Writer, header ...string) *tablewriter.Table {
	t := tablewriter.NewTable(w,
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithRowAutoWrap(tw.WrapNone),
		tablewriter.WithHeaderAutoWrap(tw.WrapNone),
		tablewriter.WithRowAlignment(tw.AlignLeft),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
	)
	h := make([]any, len(header))
	for i, s := range header {
		h[i] = s
	}
	t.Header(h...)
	return t
}

// WriteTable renders a whole table of string rows.
func WriteTable(w io.Writer, header []string, rows [][]string) error {
	t := NewTable(w, header...)
	for _, r := range rows {
		if err := t.Append(r); err != nil {
			return err
		}
	}
	return t.Render()
}
