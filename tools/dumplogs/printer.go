package dumplogs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/etckit/etckit/tools/cli"
	"go.etcd.io/raft/v3/raftpb"
)

// printer writes the default mode's output in the selected format.
type printer struct {
	s       *runState
	filters []filter
	dec     *decoderProc
	count   int
	rows    [][]string // table format
	line    []byte     // simple format: the line being written
	text    []byte     // the entries' fields text, reused
	sum     *summary   // --summary
}

func newPrinter(s *runState, filters []filter) *printer {
	p := &printer{s: s, filters: filters}
	if s.o.summary {
		p.sum = newSummary()
	}
	return p
}

func (p *printer) startDecoder() error {
	d, err := p.s.startDecoder()
	p.dec = d
	return err
}

func (p *printer) stopDecoder() {
	if p.dec != nil {
		if err := p.dec.stop(); err != nil {
			p.s.report(problem{Kind: "stream decoder", Offset: -1, Detail: err.Error()})
		}
		p.dec = nil
	}
}

func (p *printer) format() cli.Format { return p.s.o.format.Value }

// confStateJSON is json.Marshal of a gogoproto raftpb.ConfState, as
// etcd-dump-logs prints it (the repeated fields are omitempty, auto_leave
// is not).
func confStateJSON(cs *raftpb.ConfState) string {
	obj := &cli.Object{}
	for _, f := range []struct {
		n string
		v []uint64
	}{{"voters", cs.GetVoters()}, {"learners", cs.GetLearners()}, {"voters_outgoing", cs.GetVotersOutgoing()}, {"learners_next", cs.GetLearnersNext()}} {
		if len(f.v) > 0 {
			obj.Set(f.n, f.v)
		}
	}
	obj.Set("auto_leave", cs.GetAutoLeave())
	b, _ := json.Marshal(obj)
	return string(b)
}

func hexIDs(ids []uint64) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatUint(id, 16))
	}
	b.WriteByte(']')
	return b.String()
}

func (p *printer) header(b base, ix *index, count int, last uint64) error {
	s := p.s
	w := s.out
	node, cluster, merr := metadataIDs(ix.metadata)
	if ix.metadata == nil {
		merr = nil
	}
	if merr != nil {
		s.report(problem{Kind: "undecodable metadata", File: s.walDir, Offset: -1, Detail: merr.Error()})
	}
	st := ix.state
	switch p.format() {
	case cli.JSON:
		o := (&cli.Object{}).Set("kind", "snapshot")
		switch {
		case b.fromIndex:
			o.Set("start_index", b.index+1)
		case b.snapshot == nil:
			o.Set("empty", true)
		default:
			md := b.snapshot.GetMetadata()
			o.Set("file", b.snapName).Set("term", md.GetTerm()).Set("index", md.GetIndex())
			o.Set("voters", nonNil(md.GetConfState().GetVoters())).Set("learners", nonNil(md.GetConfState().GetLearners()))
		}
		if err := cli.JSONLine(w, o); err != nil {
			return err
		}
		o = (&cli.Object{}).Set("kind", "wal").Set("dir", s.walDir)
		o.Set("node_id", node).Set("cluster_id", cluster)
		o.Set("term", st.GetTerm()).Set("commit", st.GetCommit()).Set("vote", st.GetVote())
		o.Set("entries", count)
		if count > 0 {
			o.Set("last_index", last)
		}
		return cli.JSONLine(w, o)
	case cli.Table:
		rows := [][]string{}
		switch {
		case b.fromIndex:
			rows = append(rows, []string{"start", fmt.Sprintf("index %d", b.index+1)})
		case b.snapshot == nil:
			rows = append(rows, []string{"snapshot", "empty"})
		default:
			md := b.snapshot.GetMetadata()
			rows = append(rows, []string{"snapshot", fmt.Sprintf("%s term=%d index=%d voters=%s", b.snapName, md.GetTerm(), md.GetIndex(), hexIDs(md.GetConfState().GetVoters()))})
		}
		rows = append(rows,
			[]string{"wal dir", s.walDir},
			[]string{"node id", strconv.FormatUint(node, 16)},
			[]string{"cluster id", strconv.FormatUint(cluster, 16)},
			[]string{"hard state", fmt.Sprintf("term=%d commit=%d vote=%x", st.GetTerm(), st.GetCommit(), st.GetVote())},
			[]string{"entries", strconv.Itoa(count)})
		if count > 0 {
			rows = append(rows, []string{"last index", strconv.FormatUint(last, 10)})
		}
		return cli.WriteTable(w, []string{"WAL", "VALUE"}, rows)
	}
	// etcd-dump-logs' layout.
	switch {
	case b.fromIndex:
		fmt.Fprintf(w, "Start dumping log entries from index %d.\n", b.index+1)
	case b.snapshot == nil:
		fmt.Fprintf(w, "Snapshot:\nempty\nStart dumping log entries from snapshot.\n")
	default:
		md := b.snapshot.GetMetadata()
		fmt.Fprintf(w, "Snapshot:\nterm=%d index=%d nodes=%s confstate=%s\nStart dumping log entries from snapshot.\n",
			md.GetTerm(), md.GetIndex(), hexIDs(md.GetConfState().GetVoters()), confStateJSON(md.GetConfState()))
	}
	fmt.Fprintf(w, "WAL metadata:\nnodeID=%x clusterID=%x term=%d commitIndex=%d vote=%x\n", node, cluster, st.GetTerm(), st.GetCommit(), st.GetVote())
	fmt.Fprintf(w, "WAL entries: %d\n", count)
	if count > 0 {
		fmt.Fprintf(w, "lastIndex=%d\n", last)
	}
	if p.sum == nil {
		fmt.Fprintf(w, "%4s\t%10s\ttype\tdata\n", "term", "index")
	}
	return nil
}

func nonNil(v []uint64) []uint64 {
	if v == nil {
		return []uint64{}
	}
	return v
}

func (p *printer) entry(e *raftpb.Entry) error {
	s := p.s
	mv := s.o.maxValue
	if p.format() == cli.JSON {
		mv = 0 // JSON carries full values
	}
	d := decodeEntryInto(e, mv, p.mode(), p.text)
	// Only copies of d.Fields.text outlive this call (EtcdText, table
	// rows): its buffer is reused for the next entry.
	p.text = d.Fields.text
	if !passes(p.filters, d) {
		return nil
	}
	p.count++
	if p.sum != nil {
		p.sum.add(e, d, s.o.prefixDepth)
		return nil
	}
	var status, decodedData string
	if p.dec != nil {
		var err error
		status, decodedData, err = p.dec.decode(e.Data)
		if err != nil {
			s.report(problem{Kind: "stream decoder", Offset: -1, Detail: fmt.Sprintf("entry %d: %v", e.GetIndex(), err)})
			p.stopDecoder()
		}
	}
	w := s.out
	switch p.format() {
	case cli.JSON:
		o := (&cli.Object{}).Set("kind", "entry").Set("term", e.GetTerm()).Set("index", e.GetIndex())
		o.Set("type", d.Class).Set("category", d.Category).Set("op", d.Op).Set("request", d.object())
		if d.Err != nil {
			o.Set("error", d.Err.Error())
		}
		o.Set("data_len", len(e.Data))
		if p.dec != nil || status != "" {
			o.Set("decoder_status", status).Set("decoded", decodedData)
		}
		return cli.JSONLine(w, o)
	case cli.Table:
		row := []string{strconv.FormatUint(e.GetTerm(), 10), strconv.FormatUint(e.GetIndex(), 10), d.Class, d.Op, d.Fields.String()}
		if s.o.streamDecoder != "" {
			row = append(row, status, decodedData)
		}
		p.rows = append(p.rows, row)
		return nil
	}
	// fmt's "%4d\t%10d\t%s\t%s", without fmt.
	b := p.line[:0]
	b = appendPadded(b, e.GetTerm(), 4)
	b = append(b, '\t')
	b = appendPadded(b, e.GetIndex(), 10)
	b = append(b, '\t')
	b = append(b, d.Class...)
	b = append(b, '\t')
	if d.etcdFromFields {
		b = append(b, d.Op...)
		if len(d.Fields.text) > 0 {
			b = append(b, ' ')
			b = append(b, d.Fields.text...)
		}
	} else {
		b = append(b, d.EtcdText...)
	}
	if p.dec != nil || status != "" {
		b = append(b, '\t')
		b = append(b, status...)
		b = append(b, '\t')
		b = append(b, decodedData...)
	}
	b = append(b, '\n')
	p.line = b
	_, err := w.Write(b)
	return err
}

// appendPadded appends v in decimal, right-aligned in width columns with
// spaces, as fmt's %<width>d.
func appendPadded(b []byte, v uint64, width int) []byte {
	var num [20]byte
	n := strconv.AppendUint(num[:0], v, 10)
	for i := len(n); i < width; i++ {
		b = append(b, ' ')
	}
	return append(b, n...)
}

// mode is the fields rendering the output needs.
func (p *printer) mode() fieldMode {
	switch {
	case p.sum != nil:
		return 0 // the summary needs only the op and the written keys
	case p.format() == cli.JSON:
		return jsonFields
	case p.format() == cli.Table:
		return textFields
	}
	return textFields | lazyEtcdText
}

func (p *printer) footer() error {
	s := p.s
	w := s.out
	if p.sum != nil {
		if err := p.sum.print(s, p.format()); err != nil {
			return err
		}
	}
	switch p.format() {
	case cli.JSON:
		return cli.JSONLine(w, (&cli.Object{}).Set("kind", "end").Set("entry_types", s.o.entryType).Set("count", p.count))
	case cli.Table:
		if p.sum == nil {
			h := []string{"TERM", "INDEX", "TYPE", "OP", "DATA"}
			if s.o.streamDecoder != "" {
				h = append(h, "DECODER STATUS", "DECODED")
			}
			if err := cli.WriteTable(w, h, p.rows); err != nil {
				return err
			}
		}
		_, err := fmt.Fprintf(w, "Entry types (%s) count is : %d\n", s.o.entryType, p.count)
		return err
	}
	_, err := fmt.Fprintf(w, "\nEntry types (%s) count is : %d\n", s.o.entryType, p.count)
	return err
}

// summary counts entries and bytes by op and writes by key prefix.
type summary struct {
	entries, bytes int
	byOp           map[string]*opStat
	byPrefix       map[string]*opStat
}

type opStat struct {
	name           string
	entries, bytes int
}

func newSummary() *summary {
	return &summary{byOp: map[string]*opStat{}, byPrefix: map[string]*opStat{}}
}

func bump(m map[string]*opStat, k string, n, b int) {
	st := m[k]
	if st == nil {
		st = &opStat{name: k}
		m[k] = st
	}
	st.entries += n
	st.bytes += b
}

func (s *summary) add(e *raftpb.Entry, d *decoded, depth int) {
	s.entries++
	s.bytes += len(e.Data)
	bump(s.byOp, d.Op, 1, len(e.Data))
	for _, w := range d.writes {
		bump(s.byPrefix, keyPrefix(w.key, depth), 1, w.size)
	}
}

// keyPrefix is the key up to and including its depth-th '/' after a leading
// one: /registry/pods/default/web-0 at depth 2 is /registry/pods/. Keys
// with fewer separators are their own prefix.
func keyPrefix(k []byte, depth int) string {
	seen := 0
	for i, c := range k {
		if c == '/' && i > 0 {
			seen++
			if seen == depth {
				return string(k[:i+1])
			}
		}
	}
	return string(k)
}

func sorted(m map[string]*opStat) []*opStat {
	out := make([]*opStat, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].entries != out[j].entries {
			return out[i].entries > out[j].entries
		}
		return out[i].name < out[j].name
	})
	return out
}

func (s *summary) print(rs *runState, f cli.Format) error {
	w := rs.out
	ops := sorted(s.byOp)
	prefixes := sorted(s.byPrefix)
	if len(prefixes) > rs.o.top {
		prefixes = prefixes[:rs.o.top]
	}
	switch f {
	case cli.JSON:
		o := (&cli.Object{}).Set("kind", "summary").Set("entries", s.entries).Set("bytes", s.bytes)
		var ol, pl []*cli.Object
		for _, x := range ops {
			ol = append(ol, (&cli.Object{}).Set("op", x.name).Set("entries", x.entries).Set("bytes", x.bytes))
		}
		for _, x := range prefixes {
			pl = append(pl, (&cli.Object{}).Set("prefix", x.name).Set("writes", x.entries).Set("bytes", x.bytes))
		}
		o.Set("by_op", ol).Set("top_prefixes", pl).Set("prefix_depth", rs.o.prefixDepth)
		return cli.JSONLine(w, o)
	case cli.Table:
		rows := [][]string{}
		for _, x := range ops {
			rows = append(rows, []string{x.name, strconv.Itoa(x.entries), strconv.Itoa(x.bytes)})
		}
		rows = append(rows, []string{"total", strconv.Itoa(s.entries), strconv.Itoa(s.bytes)})
		if err := cli.WriteTable(w, []string{"OP", "ENTRIES", "BYTES"}, rows); err != nil {
			return err
		}
		rows = rows[:0]
		for _, x := range prefixes {
			rows = append(rows, []string{QuoteBytes([]byte(x.name), 0), strconv.Itoa(x.entries), strconv.Itoa(x.bytes)})
		}
		return cli.WriteTable(w, []string{"KEY PREFIX", "WRITES", "KEY+VALUE BYTES"}, rows)
	}
	fmt.Fprintf(w, "Summary: %d entries, %d bytes of entry data\n", s.entries, s.bytes)
	fmt.Fprintf(w, "%-28s %8s %12s\n", "op", "entries", "bytes")
	for _, x := range ops {
		fmt.Fprintf(w, "%-28s %8d %12d\n", x.name, x.entries, x.bytes)
	}
	fmt.Fprintf(w, "Top %d key prefixes (depth %d) by writes:\n", rs.o.top, rs.o.prefixDepth)
	fmt.Fprintf(w, "%-40s %8s %12s\n", "prefix", "writes", "bytes")
	for _, x := range prefixes {
		fmt.Fprintf(w, "%-40s %8d %12d\n", QuoteBytes([]byte(x.name), 0), x.entries, x.bytes)
	}
	return nil
}
