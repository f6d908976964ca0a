package evaluator

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// pebbleLogger sends Pebble's logs to slog: its info lines (WAL recovery,
// compactions) at debug, errors at error.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...), "lib", "pebble")
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "lib", "pebble")
}

// Fatalf is called by Pebble on unrecoverable corruption.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "lib", "pebble", "fatal", true)
	os.Exit(1)
}

// memTableBytes is the size of one memtable (at most two are kept): fewer,
// larger flushes leave fewer tables for a read to look into.
const memTableBytes = 32 << 20

// pebbleOptions are the options of the evaluator's store; BenchmarkEvaluate's
// baseline store uses them too. The block cache is Config.BlockCacheBytes:
// Pebble's default (8 MB) held so little of a store of a million users that
// most reads went to disk for index blocks as well as the data block.
func pebbleOptions(cfg *Config, log *slog.Logger) *pebble.Options {
	opts := &pebble.Options{Logger: pebbleLogger{log}, CacheSize: cfg.BlockCacheBytes, MemTableSize: memTableBytes}
	// A user's first event looks up a key that does not exist, and a read
	// of one that does looks into every level above the one holding it:
	// bloom filters answer both without reading a block.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return opts
}
