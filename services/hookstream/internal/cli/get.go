package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/hookstream/hookstream/pkg/manifest"
)

func init() {
	register("get", command{usage: "get [KIND [NAME]] [-o table|yaml|json]", help: "show webhooks, segments and campaigns", run: runGet})
}

// runGet prints objects from the server: every kind, one kind, or one
// object, as a table (default), or as YAML or JSON that `apply -f` takes
// back unchanged.
func runGet(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	output := fs.String("o", "table", "Output format: table, yaml or json.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch *output {
	case "table", "yaml", "json":
	default:
		return fmt.Errorf("-o must be table, yaml or json, got %q", *output)
	}
	if len(pos) > 2 {
		return usageError(fs, "get [KIND [NAME]] [-o table|yaml|json]")
	}
	if len(pos) == 1 {
		// kubectl style "campaign/cart".
		if k, n, ok := strings.Cut(pos[0], "/"); ok {
			pos = []string{k, n}
		}
	}
	ctx := context.Background()
	kinds := []string{"webhooks", "segments", "campaigns"}
	if len(pos) > 0 {
		path, _, err := kindArg(pos[0])
		if err != nil {
			return err
		}
		kinds = []string{path}
	}
	if len(pos) == 2 {
		var raw json.RawMessage
		if err := c.do(ctx, "GET", "/v1/"+kinds[0]+"/"+url.PathEscape(pos[1]), "", nil, &raw); err != nil {
			return err
		}
		o, err := manifest.Decode(raw)
		if err != nil {
			return err
		}
		return printObjects(stdout, stderr, *output, []manifest.Object{o}, true)
	}
	var objs []manifest.Object
	for _, k := range kinds {
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := c.do(ctx, "GET", "/v1/"+k, "", nil, &list); err != nil {
			return err
		}
		for _, raw := range list.Items {
			o, err := manifest.Decode(raw)
			if err != nil {
				return err
			}
			objs = append(objs, o)
		}
	}
	if len(objs) == 0 && *output == "table" {
		fmt.Fprintf(stderr, "No %s found.\n", strings.Join(kinds, ", "))
		return nil
	}
	return printObjects(stdout, stderr, *output, objs, false)
}

func printObjects(stdout, stderr io.Writer, output string, objs []manifest.Object, single bool) error {
	switch output {
	case "json":
		var v any = objs
		if single {
			v = objs[0]
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	case "yaml":
		var b bytes.Buffer
		for i, o := range objs {
			if i > 0 {
				b.WriteString("---\n")
			}
			enc := yaml.NewEncoder(&b)
			enc.SetIndent(2)
			if err := enc.Encode(o); err != nil {
				return err
			}
			_ = enc.Close()
		}
		_, err := stdout.Write(b.Bytes())
		return err
	}
	return printTables(stdout, objs)
}

// printTables prints one table per kind, in the order of objs.
func printTables(w io.Writer, objs []manifest.Object) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	kind := ""
	for _, o := range objs {
		if o.GetKind() != kind {
			if kind != "" {
				fmt.Fprintln(tw)
			}
			kind = o.GetKind()
			switch kind {
			case manifest.KindWebhook:
				fmt.Fprintln(tw, "WEBHOOK\tURL\tMETHOD\tGENERATION")
			case manifest.KindSegment:
				fmt.Fprintln(tw, "SEGMENT\tGENERATION")
			case manifest.KindCampaign:
				fmt.Fprintln(tw, "CAMPAIGN\tSTATE\tDELIVERY\tTRIGGER\tWEBHOOK\tGENERATION\tTARGET-ID")
			}
		}
		gen := strconv.FormatInt(o.GetMetadata().Generation, 10)
		switch o := o.(type) {
		case *manifest.Webhook:
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.Metadata.Name, o.Spec.URL, dash(o.Spec.Method), gen)
		case *manifest.Segment:
			fmt.Fprintf(tw, "%s\t%s\n", o.Metadata.Name, gen)
		case *manifest.Campaign:
			trigger, target := "-", "-"
			if o.Spec.Trigger != nil {
				trigger = o.Spec.Trigger.Type
			}
			if o.Status != nil {
				target = strconv.FormatInt(o.Status.TargetID, 10)
			}
			delivery := o.Spec.Delivery.Type
			if r := o.Spec.Delivery.Recurring; r != nil {
				delivery += " (every " + r.Every + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Metadata.Name, dash(o.Spec.State), delivery, trigger, o.Spec.Webhook, gen, target)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
