package interop

import (
	"os"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
)

func fileReaders(files []*os.File) []fileutil.FileReader {
	out := make([]fileutil.FileReader, len(files))
	for i, f := range files {
		out[i] = fileutil.NewFileReader(f)
	}
	return out
}
