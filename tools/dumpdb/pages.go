package dumpdb

import (
	"fmt"
	"strings"

	"github.com/etckit/etckit/mvcc/boltfile"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
)

// PageProblem is a damaged page found by CheckPages or MetaProblems.
type PageProblem = boltfile.Problem

// CheckPages walks the bbolt file's tree (from the meta page bbolt reads)
// with plain reads (boltfile.Check) and lists damaged pages. It never
// panics; the error is an I/O error or a file with no valid meta page.
// progress (optional) is called with the bytes of the pages visited so
// far.
func CheckPages(path string, progress ...func(done int64)) ([]PageProblem, error) {
	opts := boltfile.Options{}
	if len(progress) > 0 {
		opts.Progress = progress[0]
	}
	rep, err := boltfile.CheckFile(vfs.OS{}, path, opts)
	if err != nil {
		return nil, err
	}
	if !rep.OK {
		return nil, fmt.Errorf("%s: no valid bbolt meta page", path)
	}
	return rep.Problems, nil
}

// PagesError is returned for a db whose pages are damaged: bbolt would
// crash reading them, so nothing is read through bbolt (exit 1).
type PagesError struct {
	Path     string
	Problems []PageProblem
}

func (e *PagesError) Error() string {
	var s []string
	for i, p := range e.Problems {
		if i == 5 {
			s = append(s, fmt.Sprintf("... %d more", len(e.Problems)-5))
			break
		}
		s = append(s, p.String())
	}
	return fmt.Sprintf("%s: damaged bbolt pages, not read further (etckit doctor lists them): %s", e.Path, strings.Join(s, "; "))
}

func pagesError(path string, probs []PageProblem) error {
	return &cli.ExitError{Code: cli.ExitProblems, Err: &PagesError{Path: path, Problems: probs}}
}

// MetaProblems lists the meta pages (0 and 1) that bbolt rejects (bad
// magic, version or checksum). bbolt opens a file with one valid meta page
// and reads the tree that page names; when the rejected page was the newer
// one, that is the state before the last commit.
func MetaProblems(path string) ([]PageProblem, error) {
	_, _, rejected, err := boltfile.ReadMetaFile(vfs.OS{}, path)
	return rejected, err
}
