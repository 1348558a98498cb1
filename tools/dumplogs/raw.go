package dumplogs

import (
	"fmt"
	"strconv"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
)

// dumpRaw lists every record of every segment (--raw). Like etcd-dump-logs
// --raw it skips entries and snapshot records below --start-index and state
// records whose commit is below it; etckit also honours --end-index for
// entries.
func (s *runState) dumpRaw() error {
	o := s.o
	sc, err := wal.NewScanner(s.walDir, wal.ScanOptions{FS: o.fs, ContinueOnCRCError: true})
	if err != nil {
		return fmt.Errorf("dump-logs: %w", err)
	}
	defer sc.Close()
	var rows [][]string
	emit := func(pos wal.Position, rec wal.Record, crcErr error, kind string, text string, obj *cli.Object) error {
		switch o.format.Value {
		case cli.JSON:
			j := (&cli.Object{}).Set("kind", "record").Set("segment", pos.Segment).Set("offset", pos.Offset)
			j.Set("type", kind).Set("crc", rec.CRC).Set("data_len", len(rec.Data))
			if crcErr != nil {
				j.Set("crc_error", crcErr.Error())
			}
			for _, k := range obj.Keys() {
				v, _ := obj.Get(k)
				j.Set(k, v)
			}
			return cli.JSONLine(s.out, j)
		case cli.Table:
			bad := ""
			if crcErr != nil {
				bad = "CRC MISMATCH"
			}
			rows = append(rows, []string{pos.Segment, strconv.FormatInt(pos.Offset, 10), kind, strconv.FormatUint(uint64(rec.CRC), 10), bad, text})
			return nil
		}
		_, err := fmt.Fprintf(s.out, "%s\t%s\n", pos, text)
		return err
	}
	for sc.Next() {
		pos, rec := sc.Position(), sc.Record()
		s.tick(pos)
		crcErr := sc.RecordErr()
		if crcErr != nil {
			s.report(problemOf(crcErr))
			if o.format.Value == cli.Simple {
				fmt.Fprintf(s.out, "%s\tError: %v\n", pos, crcErr)
			}
		}
		obj := &cli.Object{}
		var text, kind string
		switch rec.Type {
		case wal.CRCType:
			kind, text = "crc", fmt.Sprintf("CRC: %d", rec.CRC)
		case wal.MetadataType:
			kind = "metadata"
			node, cluster, err := metadataIDs(rec.Data)
			if err != nil {
				s.reportAt("undecodable record", pos, "metadata: "+err.Error())
				text = "Metadata: ??? " + QuoteBytes(rec.Data, 64)
				break
			}
			obj.Set("node_id", node).Set("cluster_id", cluster)
			text = fmt.Sprintf("Metadata: node_id=%x cluster_id=%x", node, cluster)
		case wal.StateType:
			kind = "state"
			st, err := wal.UnmarshalHardState(rec.Data)
			if err != nil {
				s.reportAt("undecodable record", pos, "HardState: "+err.Error())
				text = "HardState: ???"
				break
			}
			if st.GetCommit() < o.startIndex {
				continue
			}
			obj.Set("term", st.GetTerm()).Set("vote", st.GetVote()).Set("commit", st.GetCommit())
			text = fmt.Sprintf("HardState: term=%d vote=%x commit=%d", st.GetTerm(), st.GetVote(), st.GetCommit())
		case wal.SnapshotType:
			kind = "snapshot"
			sn, err := wal.UnmarshalSnapshot(rec.Data)
			if err != nil {
				s.reportAt("undecodable record", pos, "snapshot: "+err.Error())
				text = "Snapshot: ???"
				break
			}
			if sn.Index < o.startIndex {
				continue
			}
			obj.Set("index", sn.Index).Set("term", sn.Term)
			text = fmt.Sprintf("Snapshot: index=%d term=%d", sn.Index, sn.Term)
			if sn.ConfState != nil {
				obj.Set("conf_state", confStateObject(sn.ConfState))
				text += " conf_state=" + confStateJSON(sn.ConfState)
			}
		case wal.EntryType:
			kind = "entry"
			e, err := wal.UnmarshalEntry(rec.Data)
			if err != nil {
				s.reportAt("undecodable record", pos, "entry: "+err.Error())
				text = "Entry: ???"
				break
			}
			if e.GetIndex() < o.startIndex || !o.inRange(e.GetIndex()) {
				continue
			}
			mv := o.maxValue
			if o.format.Value == cli.JSON {
				mv = 0
			}
			d := decodeEntry(e, mv)
			obj.Set("term", e.GetTerm()).Set("index", e.GetIndex()).Set("entry_type", d.Class)
			obj.Set("op", d.Op).Set("request", d.object())
			text = fmt.Sprintf("Entry: term=%d index=%d type=%s %s", e.GetTerm(), e.GetIndex(), d.Class, d.Op)
			if r := d.Fields.String(); r != "" {
				text += " " + r
			}
		default:
			kind, text = "unknown", fmt.Sprintf("Unknown record type %d", rec.Type)
			s.reportAt("unknown record type", pos, fmt.Sprintf("record type %d", rec.Type))
		}
		if err := emit(pos, rec, crcErr, kind, text, obj); err != nil {
			return err
		}
	}
	endErr := sc.Err()
	if endErr != nil && corrupt.As(endErr) == nil {
		return fmt.Errorf("dump-logs: %w", endErr)
	}
	if endErr != nil {
		s.report(problemOf(endErr))
	}
	switch o.format.Value {
	case cli.JSON:
		j := (&cli.Object{}).Set("kind", "end")
		if c := corrupt.As(endErr); c != nil {
			j.Set("error", c.Error())
		} else {
			j.Set("eof", true)
		}
		return cli.JSONLine(s.out, j)
	case cli.Table:
		if err := cli.WriteTable(s.out, []string{"SEGMENT", "OFFSET", "TYPE", "CRC", "CHECK", "RECORD"}, rows); err != nil {
			return err
		}
	}
	if c := corrupt.As(endErr); c != nil {
		if c.Kind == corrupt.TornTail {
			_, err := fmt.Fprintf(s.out, "ErrUnexpectedEOF: The last record might be corrupted, error: %v.\n", c)
			return err
		}
		_, err := fmt.Fprintf(s.out, "Error: Reading failed: %v\n", c)
		return err
	}
	_, err = fmt.Fprintf(s.out, "EOF: All entries were processed.\n")
	return err
}

func confStateObject(cs *raftpb.ConfState) *cli.Object {
	return (&cli.Object{}).Set("voters", nonNil(cs.GetVoters())).Set("learners", nonNil(cs.GetLearners())).
		Set("voters_outgoing", nonNil(cs.GetVotersOutgoing())).Set("learners_next", nonNil(cs.GetLearnersNext())).
		Set("auto_leave", cs.GetAutoLeave())
}
