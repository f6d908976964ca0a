package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hookstream/hookstream/services/ingest"
)

func init() {
	register("send", command{usage: "send -f FILE|- [--batch N]", help: "publish events and profile updates through POST /v1/events", run: runSend})
}

// runSend publishes the records of a file (or stdin) in batches and reports
// what was accepted and what was rejected, and why. It fails when any record
// was rejected, so that scripts notice.
//
// The input is NDJSON (one record per line), a JSON array of records, one
// record, or a CleverTap upload {"d": [...]}, as POST /v1/events takes.
func runSend(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	file := fs.String("f", "", "File of events (NDJSON, a JSON array, one object or a CleverTap upload), or - for stdin.")
	batchSize := fs.Int("batch", 500, "Records per request.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *file == "" || len(pos) > 0 || *batchSize < 1 {
		return usageError(fs, "send -f FILE|- [--batch N]")
	}
	var data []byte
	if *file == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	recs, err := splitRecords(data)
	if err != nil {
		return err
	}
	if len(recs.items) == 0 {
		return errors.New("no records in the input")
	}
	accepted, rejected := 0, 0
	for start := 0; start < len(recs.items); start += *batchSize {
		end := min(start+*batchSize, len(recs.items))
		body, contentType := recs.body(start, end)
		var resp struct {
			ingest.Response
			Error string `json:"error"`
		}
		err := c.do(context.Background(), "POST", "/v1/events", contentType, body, &resp, 400)
		if err == nil && resp.Error != "" {
			err = &apiError{status: 400, message: resp.Error}
		}
		if err != nil {
			return fmt.Errorf("records %d to %d not sent (%d accepted before): %w", start+1, end, accepted, err)
		}
		accepted += resp.Accepted
		for _, r := range resp.Rejected {
			rejected++
			// A batch of one record reports positions inside it (a
			// CleverTap upload's "d"); otherwise the record's position.
			label := recs.where(start + r.Index)
			if end-start == 1 {
				label = recs.where(start)
				if r.Index > 0 {
					label += fmt.Sprintf(" d[%d]", r.Index)
				}
			}
			fmt.Fprintf(stdout, "rejected %s: %s\n", label, r.Error)
		}
	}
	fmt.Fprintf(stdout, "%d accepted, %d rejected\n", accepted, rejected)
	if rejected > 0 {
		return fmt.Errorf("%d of the records were rejected", rejected)
	}
	return nil
}

// records are the input split into the units that are batched.
type records struct {
	items []json.RawMessage
	lines []int // NDJSON: the line of each item
	// upload: the items are the elements of one CleverTap upload's "d".
	upload bool
	ndjson bool
}

// splitRecords splits data into records: the elements of a JSON array or
// of a CleverTap upload, one JSON value, or NDJSON lines (which are sent as
// they are: the server says which are bad).
func splitRecords(data []byte) (*records, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return &records{}, nil
	}
	if trimmed[0] == '[' || (trimmed[0] == '{' && json.Valid(trimmed)) {
		if trimmed[0] == '[' {
			var items []json.RawMessage
			if err := json.Unmarshal(trimmed, &items); err != nil {
				return nil, fmt.Errorf("the input is not a JSON array of records: %w", err)
			}
			return &records{items: items}, nil
		}
		var up struct {
			D []json.RawMessage `json:"d"`
		}
		if json.Unmarshal(trimmed, &up) == nil && up.D != nil {
			return &records{items: up.D, upload: true}, nil
		}
		return &records{items: []json.RawMessage{trimmed}}, nil
	}
	r := &records{ndjson: true}
	for i, line := range bytes.Split(data, []byte("\n")) {
		if line = bytes.TrimSpace(line); len(line) > 0 {
			r.items = append(r.items, json.RawMessage(line))
			r.lines = append(r.lines, i+1)
		}
	}
	return r, nil
}

// body is the request body of items [start, end).
func (r *records) body(start, end int) ([]byte, string) {
	items := r.items[start:end]
	switch {
	case r.ndjson:
		return append(bytes.Join(toBytes(items), []byte("\n")), '\n'), "application/x-ndjson"
	case r.upload:
		b, _ := json.Marshal(map[string][]json.RawMessage{"d": items})
		return b, "application/json"
	}
	b, _ := json.Marshal(items)
	return b, "application/json"
}

// where names record i for the user.
func (r *records) where(i int) string {
	switch {
	case r.ndjson && i >= 0 && i < len(r.lines):
		return fmt.Sprintf("line %d", r.lines[i])
	case r.upload:
		return fmt.Sprintf("d[%d]", i)
	}
	return fmt.Sprintf("record %d", i)
}

func toBytes(items []json.RawMessage) [][]byte {
	out := make([][]byte, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out
}
