package dumplogs

import (
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/etckit/etckit/tools/cli"
	"google.golang.org/protobuf/encoding/protowire"
)

// fieldMode says which renderings a fields builds: the text (simple and
// table output), the JSON object (json output), both (tests), or neither
// (--summary, which needs only the op and the written keys).
type fieldMode uint8

const (
	textFields fieldMode = 1 << iota
	jsonFields
	bothFields = textFields | jsonFields
	// lazyEtcdText (with textFields) leaves an InternalRaftRequest's
	// EtcdText to the printer, which writes it from Op and the fields
	// text without building the string.
	lazyEtcdText fieldMode = 1 << 2
)

// fields collects the fields of a decoded request once and renders them
// as text (name=value pairs, etckit's format) and/or as a JSON object
// (stable field names), as its mode asks. See the package doc for the
// text format.
type fields struct {
	maxValue int // abbreviate byte values longer than this in text; 0 = never
	mode     fieldMode
	text     []byte // the text rendering: space-separated fields
	obj      cli.Object
}

func newFields(maxValue int, mode fieldMode) *fields {
	return &fields{maxValue: maxValue, mode: mode}
}

// child returns an empty fields with f's mode.
func (f *fields) child(maxValue int) *fields { return newFields(maxValue, f.mode) }

func (f *fields) wantText() bool { return f.mode&textFields != 0 }
func (f *fields) wantJSON() bool { return f.mode&jsonFields != 0 }

// sep starts a new text field.
func (f *fields) sep() {
	if len(f.text) > 0 {
		f.text = append(f.text, ' ')
	}
}

func (f *fields) add(name, text string, v any) {
	if f.wantText() {
		f.sep()
		f.text = append(f.text, name...)
		if text != "" {
			f.text = append(f.text, '=')
			f.text = append(f.text, text...)
		}
	}
	if f.wantJSON() {
		f.obj.Set(name, v)
	}
}

// word adds a bare word to the text (a txn operation's op).
func (f *fields) word(w string) {
	if f.wantText() {
		f.sep()
		f.text = append(f.text, w...)
	}
}

// key adds a key-like byte field: always shown in full.
func (f *fields) key(name string, b []byte) {
	f.bytesField(name, b, 0)
}

// value adds a value-like byte field: abbreviated in text past maxValue.
func (f *fields) value(name string, b []byte) {
	f.bytesField(name, b, f.maxValue)
}

func (f *fields) bytesField(name string, b []byte, limit int) {
	k := describeK8s(b)
	if f.wantText() {
		f.sep()
		f.text = append(f.text, name...)
		f.text = append(f.text, '=')
		f.text = appendQuoteBytes(f.text, b, limit)
		if k != "" {
			f.text = append(f.text, '<')
			f.text = append(f.text, k...)
			f.text = append(f.text, '>')
		}
	}
	if f.wantJSON() {
		if utf8.Valid(b) {
			f.obj.Set(name, string(b))
		} else {
			f.obj.Set(name+"_base64", base64.StdEncoding.EncodeToString(b))
		}
	}
}

func (f *fields) str(name, s string) {
	if !f.wantText() {
		f.add(name, "", s)
		return
	}
	f.add(name, strconv.Quote(s), s)
}

func (f *fields) num(name string, v int64) {
	if f.wantText() {
		f.sep()
		f.text = append(f.text, name...)
		f.text = append(f.text, '=')
		f.text = strconv.AppendInt(f.text, v, 10)
	}
	if f.wantJSON() {
		f.obj.Set(name, v)
	}
}

func (f *fields) unum(name string, v uint64) { f.uint(name, v, 10) }

// hexID adds an ID shown in hex in text (member and lease IDs, as etcdctl
// shows them) and as a number in JSON.
func (f *fields) hexID(name string, v uint64) { f.uint(name, v, 16) }

func (f *fields) uint(name string, v uint64, base int) {
	if f.wantText() {
		f.sep()
		f.text = append(f.text, name...)
		f.text = append(f.text, '=')
		f.text = strconv.AppendUint(f.text, v, base)
	}
	if f.wantJSON() {
		f.obj.Set(name, v)
	}
}

func (f *fields) flag(name string) { f.add(name, "", true) }

func (f *fields) enum(name, v string) { f.add(name, v, v) }

func (f *fields) strs(name string, ss []string) {
	var text string
	if f.wantText() {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = strconv.Quote(s)
		}
		text = "[" + strings.Join(q, ",") + "]"
	}
	if ss == nil {
		ss = []string{}
	}
	f.add(name, text, ss)
}

// sub adds a nested object: text name={a=1 b=2}.
func (f *fields) sub(name string, g *fields) {
	var text string
	if f.wantText() {
		text = "{" + g.String() + "}"
	}
	f.add(name, text, &g.obj)
}

// list adds a list of nested objects: text name=[x; y].
func (f *fields) list(name string, gs []*fields) {
	if f.wantText() {
		f.sep()
		f.text = append(f.text, name...)
		f.text = append(f.text, "=["...)
		for i, g := range gs {
			if i > 0 {
				f.text = append(f.text, "; "...)
			}
			f.text = append(f.text, g.text...)
		}
		f.text = append(f.text, ']')
	}
	if f.wantJSON() {
		o := make([]*cli.Object, len(gs))
		for i, g := range gs {
			o[i] = &g.obj
		}
		f.obj.Set(name, o)
	}
}

func (f *fields) String() string { return string(f.text) }

// QuoteBytes renders bytes as a Go-quoted string: printable UTF-8 stays
// readable ("/registry/pods/default/web-0"), everything else is escaped
// (\x00, \n, \u00e9 is kept as é). With limit > 0, bytes past limit are cut
// and the total length is appended: "abc"...(10240 bytes).
func QuoteBytes(b []byte, limit int) string {
	return string(appendQuoteBytes(nil, b, limit))
}

// appendQuoteBytes appends QuoteBytes(b, limit) to dst.
func appendQuoteBytes(dst, b []byte, limit int) []byte {
	if limit > 0 && len(b) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(b[cut]) && limit-cut < utf8.UTFMax {
			cut--
		}
		if cut == 0 {
			cut = limit
		}
		dst = appendQuote(dst, b[:cut])
		dst = append(dst, "...("...)
		dst = strconv.AppendInt(dst, int64(len(b)), 10)
		return append(dst, " bytes)"...)
	}
	return appendQuote(dst, b)
}

// k8sMagic starts a Kubernetes protobuf-encoded object in etcd.
const k8sMagic = "k8s\x00"

// describeK8s names the type of a Kubernetes protobuf value
// (runtime.Unknown{typeMeta{apiVersion, kind}, raw, ...} after "k8s\0"),
// or returns "" for anything else. It never fails: odd bytes give "".
func describeK8s(b []byte) string {
	if len(b) < len(k8sMagic) || string(b[:len(k8sMagic)]) != k8sMagic {
		return ""
	}
	b = b[len(k8sMagic):]
	var apiVersion, kind string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return ""
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num != 1 {
			continue
		}
		for len(v) > 0 {
			num, typ, n := protowire.ConsumeTag(v)
			if n < 0 || typ != protowire.BytesType {
				return ""
			}
			v = v[n:]
			s, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return ""
			}
			v = v[n:]
			switch num {
			case 1:
				apiVersion = string(s)
			case 2:
				kind = string(s)
			}
		}
		break
	}
	if kind == "" {
		return "k8s protobuf"
	}
	return "k8s " + apiVersion + " " + kind
}

// setOp sets a txn operation's "op" in JSON (its text is a word()).
func (f *fields) setOp(op string) {
	if f.wantJSON() {
		f.obj.Set("op", op)
	}
}
