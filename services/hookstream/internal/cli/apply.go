package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/services/ingest"
)

func init() {
	register("apply", command{usage: "apply -f FILE|DIR|- [--dry-run]", help: "create or update manifests on the server", run: runApply})
}

// runApply checks the manifests offline (every problem with its file and
// line), then sends them all in one POST /v1/apply, so that a campaign and
// the webhook it names may be in different files, and prints what happened
// to each object as kubectl does.
func runApply(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var files multiFlag
	fs.Var(&files, "f", "Manifest file, directory (its .yaml, .yml and .json files), or - for stdin (repeatable).")
	dryRun := fs.Bool("dry-run", false, "Validate on the server and show what would change, without changing anything.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 || len(pos) > 0 {
		return usageError(fs, "apply -f FILE|DIR|- [--dry-run]")
	}
	srcs, err := readSources(files)
	if err != nil {
		return err
	}
	if err := checkOffline(srcs); err != nil {
		return err
	}
	body, at := concat(srcs)
	path := "/v1/apply"
	if *dryRun {
		path += "?dryRun=true"
	}
	var resp ingest.ApplyResponse
	if err := c.do(context.Background(), "POST", path, "application/yaml", body, &resp); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && len(ae.problems) > 0 {
			for i := range ae.problems {
				ae.problems[i].Source, ae.problems[i].Line = at(ae.problems[i].Line)
			}
			return fmt.Errorf("invalid manifests:\n%w", ae.problems)
		}
		return err
	}
	for _, r := range resp.Results {
		line := ref(r.Kind, r.Name) + " " + r.Action
		if resp.DryRun {
			line += " (dry run)"
			if len(r.Changed) > 0 {
				line += ": " + strings.Join(r.Changed, ", ")
			}
		}
		fmt.Fprintln(stdout, line)
	}
	return nil
}

// source is one input of -f: a file, or stdin.
type source struct {
	name string
	data []byte
}

// readSources reads every -f argument; a directory gives its manifest
// files in name order.
func readSources(args []string) ([]source, error) {
	var out []source
	for _, a := range args {
		if a == "-" {
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("read stdin: %w", err)
			}
			out = append(out, source{name: "<stdin>", data: data})
			continue
		}
		files, err := manifest.ManifestFiles(a)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read manifests: %w", err)
			}
			out = append(out, source{name: f, data: data})
		}
	}
	return out, nil
}

// checkOffline finds every problem the manifests have on their own. Names
// of other objects are assumed to exist: the server checks them against
// what is applied.
func checkOffline(srcs []source) error {
	var objs []manifest.Object
	var probs manifest.Problems
	for _, s := range srcs {
		o, err := manifest.Parse(s.data, s.name)
		var ps manifest.Problems
		if errors.As(err, &ps) {
			probs = append(probs, ps...)
			continue
		}
		if err != nil {
			return err
		}
		objs = append(objs, o...)
	}
	if len(probs) == 0 {
		probs = manifest.Validate(objs, func(string, string) bool { return true })
	}
	if len(probs) > 0 {
		return fmt.Errorf("invalid manifests:\n%w", probs)
	}
	if len(objs) == 0 {
		return errors.New("no manifests found in the input")
	}
	return nil
}

// concat joins the sources into one YAML stream and returns a function that
// maps a line of the stream back to its source and line.
func concat(srcs []source) ([]byte, func(line int) (string, int)) {
	var b bytes.Buffer
	starts := make([]int, len(srcs)) // first line of each source, 1-based
	line := 1
	for i, s := range srcs {
		if i > 0 {
			b.WriteString("---\n")
			line++
		}
		starts[i] = line
		b.Write(s.data)
		line += bytes.Count(s.data, []byte("\n"))
		if len(s.data) > 0 && s.data[len(s.data)-1] != '\n' {
			b.WriteByte('\n')
			line++
		}
	}
	return b.Bytes(), func(l int) (string, int) {
		if l <= 0 || len(srcs) == 0 {
			return "", l
		}
		i := sort.Search(len(starts), func(i int) bool { return starts[i] > l }) - 1
		if i < 0 {
			return "", l
		}
		return srcs[i].name, l - starts[i] + 1
	}
}
