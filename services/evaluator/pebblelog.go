package evaluator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
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
