package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
)

func init() {
	register("delete", command{usage: "delete KIND NAME", help: "delete a webhook, segment or campaign", run: runDelete})
}

// runDelete deletes one object: "delete campaign cart" or "delete
// campaign/cart".
func runDelete(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		if k, n, ok := strings.Cut(pos[0], "/"); ok {
			pos = []string{k, n}
		}
	}
	if len(pos) != 2 || pos[1] == "" {
		return usageError(fs, "delete KIND NAME")
	}
	path, kind, err := kindArg(pos[0])
	if err != nil {
		return err
	}
	if err := c.do(context.Background(), "DELETE", "/v1/"+path+"/"+url.PathEscape(pos[1]), "", nil, nil); err != nil {
		return err
	}
	fmt.Fprintln(stdout, ref(kind, pos[1]), "deleted")
	return nil
}
