package dumplogs

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/etckit/etckit/tools/cli"
	"google.golang.org/protobuf/encoding/protowire"
)

// fields collects the fields of a decoded request once and renders them
// both as text (name=value pairs, etckit's format) and as a JSON object
// (stable field names). See the package doc for the text format.
type fields struct {
	maxValue int // abbreviate byte values longer than this in text; 0 = never
	text     []string
	obj      cli.Object
}

func newFields(maxValue int) *fields { return &fields{maxValue: maxValue} }

func (f *fields) add(name, text string, v any) {
	if text == "" {
		f.text = append(f.text, name)
	} else {
		f.text = append(f.text, name+"="+text)
	}
	f.obj.Set(name, v)
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
	text := QuoteBytes(b, limit)
	if k := describeK8s(b); k != "" {
		text += "<" + k + ">"
	}
	f.text = append(f.text, name+"="+text)
	if utf8.Valid(b) {
		f.obj.Set(name, string(b))
	} else {
		f.obj.Set(name+"_base64", base64.StdEncoding.EncodeToString(b))
	}
}

func (f *fields) str(name, s string) { f.add(name, strconv.Quote(s), s) }

func (f *fields) num(name string, v int64) { f.add(name, strconv.FormatInt(v, 10), v) }

func (f *fields) unum(name string, v uint64) { f.add(name, strconv.FormatUint(v, 10), v) }

// hexID adds an ID shown in hex in text (member and lease IDs, as etcdctl
// shows them) and as a number in JSON.
func (f *fields) hexID(name string, v uint64) { f.add(name, strconv.FormatUint(v, 16), v) }

func (f *fields) flag(name string) { f.add(name, "", true) }

func (f *fields) enum(name, v string) { f.add(name, v, v) }

func (f *fields) strs(name string, ss []string) {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	if ss == nil {
		ss = []string{}
	}
	f.add(name, "["+strings.Join(q, ",")+"]", ss)
}

// sub adds a nested object: text name={a=1 b=2}.
func (f *fields) sub(name string, g *fields) {
	f.add(name, "{"+g.String()+"}", &g.obj)
}

// list adds a list of nested objects: text name=[x; y].
func (f *fields) list(name string, gs []*fields) {
	t := make([]string, len(gs))
	o := make([]*cli.Object, len(gs))
	for i, g := range gs {
		t[i] = g.String()
		o[i] = &g.obj
	}
	f.add(name, "["+strings.Join(t, "; ")+"]", o)
}

func (f *fields) String() string { return strings.Join(f.text, " ") }

// QuoteBytes renders bytes as a Go-quoted string: printable UTF-8 stays
// readable ("/registry/pods/default/web-0"), everything else is escaped
// (\x00, \n, \u00e9 is kept as é). With limit > 0, bytes past limit are cut
// and the total length is appended: "abc"...(10240 bytes).
func QuoteBytes(b []byte, limit int) string {
	if limit > 0 && len(b) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(b[cut]) && limit-cut < utf8.UTFMax {
			cut--
		}
		if cut == 0 {
			cut = limit
		}
		return strconv.Quote(string(b[:cut])) + fmt.Sprintf("...(%d bytes)", len(b))
	}
	return strconv.Quote(string(b))
}

// k8sMagic starts a Kubernetes protobuf-encoded object in etcd.
const k8sMagic = "k8s\x00"

// describeK8s names the type of a Kubernetes protobuf value
// (runtime.Unknown{typeMeta{apiVersion, kind}, raw, ...} after "k8s\0"),
// or returns "" for anything else. It never fails: odd bytes give "".
func describeK8s(b []byte) string {
	if !strings.HasPrefix(string(b), k8sMagic) {
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
