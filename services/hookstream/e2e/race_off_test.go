//go:build !race

package e2e

// raceEnabled: the tests run without -race (make load), so the binary under
// test is built without it and measures what users run.
const raceEnabled = false
