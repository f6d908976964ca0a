// Command hookstream runs Hookstream's services (one, or all in one process)
// and is its command-line client.
package main

import (
	"os"

	"github.com/hookstream/hookstream/services/hookstream/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
