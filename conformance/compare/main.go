// Command compare reads the `go test -v` output of etcd's test suite run
// against etcd and against etckit and prints, for every test, both
// results. It exits 1 when a test that passes against etcd does not pass
// against etckit, unless expected.txt names it with a reason.
//
//	go run ./compare -etcd results/etcd.log -etckit results/etckit.log -expected expected.txt -md results/table.md
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

var result = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)

// read returns the result of every test and subtest in a go test -v log.
func read(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if m := result.FindStringSubmatch(sc.Text()); m != nil {
			out[m[2]] = m[1]
		}
	}
	return out, sc.Err()
}

type expectation struct {
	re     *regexp.Regexp
	reason string
}

// readExpected reads lines "regexp<TAB>reason"; # starts a comment.
func readExpected(path string) ([]expectation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []expectation
	for i, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pat, reason, ok := strings.Cut(line, "\t")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want regexp<TAB>reason", path, i+1)
		}
		re, err := regexp.Compile("^(?:" + pat + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, i+1, err)
		}
		out = append(out, expectation{re, strings.TrimSpace(reason)})
	}
	return out, nil
}

func main() {
	etcdLog := flag.String("etcd", "", "go test -v output against etcd")
	etckitLog := flag.String("etckit", "", "go test -v output against etckit")
	expectedPath := flag.String("expected", "", "known differences: regexp<TAB>reason per line")
	md := flag.String("md", "", "write the table as Markdown to this file")
	flag.Parse()
	e, err := read(*etcdLog)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	k, err := read(*etckitLog)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var exp []expectation
	if *expectedPath != "" {
		if exp, err = readExpected(*expectedPath); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	names := map[string]bool{}
	for n := range e {
		names[n] = true
	}
	for n := range k {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	var b strings.Builder
	b.WriteString("| test | etcd 3.7.3 | etckit | note |\n|---|---|---|---|\n")
	counts := map[string]int{}
	var regressions []string
	// excuse is the reason a difference is expected, or "".
	excuse := func(n string) string {
		for _, x := range exp {
			if x.re.MatchString(n) {
				return x.reason
			}
		}
		return ""
	}
	differs := func(n string) bool { return e[n] == "PASS" && k[n] != "PASS" }
	// A parent fails when a subtest fails: it is excused when its
	// differing leaf subtests are all excused.
	hasChildren := func(n string) bool {
		for _, c := range sorted {
			if strings.HasPrefix(c, n+"/") {
				return true
			}
		}
		return false
	}
	excusedByChildren := func(n string) bool {
		found := false
		for _, c := range sorted {
			if !strings.HasPrefix(c, n+"/") || !differs(c) || hasChildren(c) {
				continue
			}
			if excuse(c) == "" {
				return false
			}
			found = true
		}
		return found
	}
	for _, n := range sorted {
		var er, kr string
		er, kr = e[n], k[n]
		if er == "" {
			er = "—"
		}
		if kr == "" {
			kr = "—"
		}
		note := ""
		if differs(n) {
			note = excuse(n)
			if note == "" && excusedByChildren(n) {
				note = "fails through the subtests excused above"
			}
			if note == "" {
				regressions = append(regressions, n)
				note = "**regression**"
			}
			counts["differ"]++
		}
		counts["etcd "+er]++
		counts["etckit "+kr]++
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", n, er, kr, note)
	}
	summary := fmt.Sprintf("%d tests: etcd %d passed, %d failed, %d skipped; etckit %d passed, %d failed, %d skipped; %d pass on etcd only (%d unexplained)",
		len(sorted), counts["etcd PASS"], counts["etcd FAIL"], counts["etcd SKIP"], counts["etckit PASS"], counts["etckit FAIL"], counts["etckit SKIP"],
		counts["differ"], len(regressions))
	if *md != "" {
		if err := os.WriteFile(*md, []byte(summary+"\n\n"+b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	fmt.Println(summary)
	for _, n := range regressions {
		fmt.Printf("passes against etcd, not against etckit: %s (etckit: %s)\n", n, k[n])
	}
	if len(regressions) > 0 {
		os.Exit(1)
	}
}
