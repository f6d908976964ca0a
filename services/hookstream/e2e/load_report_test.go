package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// loadSample is one reading of lag and memory.
type loadSample struct {
	at         time.Time
	produced   int64              // events acknowledged by the broker so far
	deliveries int64              // webhook requests received so far
	lag        map[string]int64   // per consumer group; -1 when unknown
	rss        map[string]int64   // bytes, per service, "harness" (broker, producer, receiver) and "redis"
	cpu        map[string]float64 // CPU seconds used so far (user + system), same keys; -1 when unknown
	load       string
	machine    loadMachineCPU
}

// loadMachineCPU is the machine's cumulative CPU time from /proc/stat, in
// clock ticks.
type loadMachineCPU struct {
	total, idle, iowait, steal int64
}

func machineCPU() loadMachineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return loadMachineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var m loadMachineCPU
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		m.total += n
		switch i {
		case 3:
			m.idle = n
		case 4:
			m.iowait = n
		case 7:
			m.steal = n
		}
	}
	return m
}

// machineShares formats the busy, iowait and steal shares of the machine
// between two readings.
func machineShares(a, b loadMachineCPU) []string {
	dt := float64(b.total - a.total)
	if dt <= 0 {
		return []string{"", "", ""}
	}
	busy := dt - float64(b.idle-a.idle) - float64(b.iowait-a.iowait) - float64(b.steal-a.steal)
	pct := func(x float64) string { return fmt.Sprintf("%.0f%%", 100*x/dt) }
	return []string{pct(busy), pct(float64(b.iowait - a.iowait)), pct(float64(b.steal - a.steal))}
}

// loadSampler reads consumer lag (kadm, against the broker) and the RSS of
// every process (/proc/PID/status VmRSS; Redis' own used_memory_rss) at a
// fixed interval.
type loadSampler struct {
	adm   *kadm.Client
	redis string
	pids  map[string]int
	prod  *loadProducer
	recv  *loadReceiver
	mu    sync.Mutex
	got   []loadSample
}

func newLoadSampler(t *testing.T, broker, redis string, procs map[string]*serveProcess, prod *loadProducer, recv *loadReceiver) *loadSampler {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	s := &loadSampler{adm: kadm.NewClient(cl), redis: redis, pids: map[string]int{}, prod: prod, recv: recv}
	for name, p := range procs {
		s.pids[name] = p.cmd.Process.Pid
	}
	return s
}

// run samples until ctx is done; the caller takes the last sample itself.
func (s *loadSampler) run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	s.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if ctx.Err() == nil {
				s.sample()
			}
		}
	}
}

func (s *loadSampler) sample() {
	x := loadSample{at: time.Now(), produced: s.prod.acked.Load(), lag: map[string]int64{}, rss: map[string]int64{}, cpu: map[string]float64{}, load: loadAvg(), machine: machineCPU()}
	x.deliveries, _ = s.recv.counts()
	for name, pid := range s.pids {
		x.rss[name], x.cpu[name] = procRSS(strconv.Itoa(pid)), procCPU(strconv.Itoa(pid))
	}
	x.rss["harness"], x.cpu["harness"] = procRSS("self"), procCPU("self")
	var redisPid string
	x.rss["redis"], redisPid = redisInfo(s.redis)
	x.cpu["redis"] = procCPU(redisPid)
	for _, g := range loadGroups {
		x.lag[g] = -1
	}
	lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if lags, err := s.adm.Lag(lctx, loadGroups...); err == nil {
		for g, l := range lags {
			if l.Error() == nil {
				x.lag[g] = l.Lag.Total()
			}
		}
	}
	s.mu.Lock()
	s.got = append(s.got, x)
	s.mu.Unlock()
}

func (s *loadSampler) samples() []loadSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// procRSS reads VmRSS of /proc/PID/status in bytes; -1 when unreadable.
func procRSS(pid string) int64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

// procCPU reads the user and system CPU seconds of /proc/PID/stat; -1
// when unreadable.
func procCPU(pid string) float64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return -1
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (state) on
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return float64(u+s) / 100 // USER_HZ is 100 on Linux
}

// redisInfo asks Redis over RESP (INFO) for its used_memory_rss and its
// process id; -1 and "" when it cannot.
func redisInfo(addr string) (rss int64, pid string) {
	rss = -1
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return rss, ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "INFO\r\n"); err != nil {
		return rss, ""
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") {
		return rss, ""
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		return rss, ""
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return rss, ""
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory_rss:"); ok {
			if b, err := strconv.ParseInt(v, 10, 64); err == nil {
				rss = b
			}
		}
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			pid = v
		}
	}
	return rss, pid
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// loadReport is one run's figures.
type loadReport struct {
	cfg                loadConfig
	prod               loadProduced
	recv               loadReceived
	samples            []loadSample
	prodStart, prodEnd time.Time
	wall               time.Duration
}

const mib = 1 << 20

func (r *loadReport) print(w io.Writer) {
	fmt.Fprintf(w, "\n== lag (records), RSS (MiB) and CPU (100%% = one core) over time; t from the first produced event, production ends at %.0fs\n\n", r.prodEnd.Sub(r.prodStart).Seconds())
	head := []string{"t (s)", "produced/s", "webhooks/s", "purchase p50", "p99"}
	for _, g := range loadGroups {
		head = append(head, "lag "+strings.TrimPrefix(g, "hookstream-"))
	}
	for _, s := range loadServices {
		head = append(head, "RSS "+s)
	}
	head = append(head, "RSS harness", "RSS redis")
	procs := append(slices.Clone(loadServices), "harness", "redis")
	for _, name := range procs {
		head = append(head, "CPU "+name)
	}
	head = append(head, "machine busy", "iowait", "steal", "load avg")
	rows := [][]string{head}
	for i, s := range r.samples {
		row := []string{fmt.Sprintf("%.0f", s.at.Sub(r.prodStart).Seconds())}
		if i == 0 {
			row = append(row, "", "", "", "")
		} else {
			p := r.samples[i-1]
			dt := s.at.Sub(p.at).Seconds()
			row = append(row, fmt.Sprintf("%.0f", float64(s.produced-p.produced)/dt), fmt.Sprintf("%.0f", float64(s.deliveries-p.deliveries)/dt))
			row = append(row, r.intervalLatency(p.at, s.at)...)
		}
		for _, g := range loadGroups {
			row = append(row, lagCell(s.lag[g]))
		}
		for _, name := range procs {
			row = append(row, mibCell(s.rss[name]))
		}
		dt := 0.0
		if i > 0 {
			dt = s.at.Sub(r.samples[i-1].at).Seconds()
		}
		for _, name := range procs {
			// A reading right after the previous one (the final sample)
			// gives no meaningful share.
			if i == 0 || dt < 0.5 || s.cpu[name] < 0 || r.samples[i-1].cpu[name] < 0 {
				row = append(row, "")
				continue
			}
			row = append(row, fmt.Sprintf("%.0f%%", 100*(s.cpu[name]-r.samples[i-1].cpu[name])/dt))
		}
		if i == 0 || dt < 0.5 {
			row = append(row, "", "", "")
		} else {
			row = append(row, machineShares(r.samples[i-1].machine, s.machine)...)
		}
		rows = append(rows, append(row, s.load))
	}
	loadTable(w, rows)

	fmt.Fprintf(w, "\n== summary (paste into docs/guarantees.md)\n\n")
	first, last := "?", "?"
	if len(r.samples) > 0 {
		first, last = r.samples[0].load, r.samples[len(r.samples)-1].load
	}
	rate := float64(r.prod.acked) / r.prod.elapsed.Seconds()
	sum := [][]string{{"figure", "value"}}
	add := func(k, v string) { sum = append(sum, []string{k, v}) }
	add("machine", fmt.Sprintf("%d CPUs shared with other work; load average %s at the first sample, %s at the last", runtime.NumCPU(), first, last))
	add("binary", map[bool]string{true: "built with -race (figures not representative)", false: "built without -race"}[raceEnabled])
	add("target", fmt.Sprintf("%d events/s for %v over %d users; trigger ratio %.3f; cart window %v", r.cfg.rate, r.cfg.duration, r.cfg.users, r.cfg.ratio, r.cfg.window))
	add("produced (acknowledged)", fmt.Sprintf("%d events in %.1fs = %.0f events/s (producer at most %d events behind its pace)", r.prod.acked, r.prod.elapsed.Seconds(), rate, r.prod.maxBehind))
	add("webhooks owed / delivered / missing", fmt.Sprintf("%d / %d / %d", r.recv.owed, r.recv.delivered, r.recv.missing))
	if r.recv.lastUs > 0 {
		span := time.UnixMicro(r.recv.lastUs).Sub(r.prodStart).Seconds()
		add("delivered rate", fmt.Sprintf("%.0f webhooks/s while producing (%d of %d owed by the end of production); %.0f/s first event to last owed webhook",
			float64(r.recv.inWindow)/r.prod.elapsed.Seconds(), r.recv.inWindow, r.recv.owed, float64(r.recv.delivered)/span))
		after := func(us int64) time.Duration {
			return max(0, time.UnixMicro(us).Sub(r.prodEnd)).Round(100 * time.Millisecond)
		}
		add("drain after the last event", fmt.Sprintf("last load-purchase webhook %v after the last event; last owed webhook %v after it (the cart window is %v)",
			after(r.recv.lastByCampaign["load-purchase"]), after(r.recv.lastUs), r.cfg.window))
	}
	add("duplicates (same webhook-id again) / causes with two ids", fmt.Sprintf("%d / %d", r.recv.duplicates, r.recv.twoIDs))
	add("cancelled carts sent anyway", fmt.Sprint(r.recv.extra["load-cart-abandon"]))
	add("latency load-purchase, event ts → receipt", latencyCell(r.recv.latency["load-purchase"]))
	add("lateness load-cart-abandon, ts + window → receipt", latencyCell(r.recv.latency["load-cart-abandon"]))
	for _, g := range loadGroups {
		var peak int64 = -1
		var at time.Duration
		for _, s := range r.samples {
			if s.lag[g] > peak {
				peak, at = s.lag[g], s.at.Sub(r.prodStart)
			}
		}
		end := int64(-1)
		if n := len(r.samples); n > 0 {
			end = r.samples[n-1].lag[g]
		}
		add("max lag "+strings.TrimPrefix(g, "hookstream-"), fmt.Sprintf("%s records (at %.0fs); %s at the end", lagCell(peak), at.Seconds(), lagCell(end)))
	}
	for _, g := range r.rssGrowth() {
		add("RSS "+g.name, fmt.Sprintf("%.0f MiB at start, mean %.0f middle third, %.0f last third, max %.0f, %.0f once drained", g.first, g.midAll, g.lastAll, g.max, g.drained))
	}
	add("CPU share while producing (100% = one core), and CPU time per event over the whole run", r.cpuShares())
	var verdict []string
	for _, g := range r.rssGrowth() {
		if g.name == "harness" || g.name == "redis" {
			continue
		}
		word := "flat"
		if g.grew(r.cfg) {
			word = "GREW"
		}
		pct := 0.0
		if g.middle > 0 {
			pct = 100 * (g.last - g.middle) / g.middle
		}
		how := ""
		if g.how != "" {
			how = "; " + g.how
		}
		verdict = append(verdict, fmt.Sprintf("%s %s (%.0f → %.0f MiB, %+.0f%%%s)", g.name, word, g.middle, g.last, pct, how))
	}
	add(fmt.Sprintf("memory plateau (mean RSS of the last third vs the middle third's, while caught up; grew = more than +%.0f%% and +%d MiB)", r.cfg.growth*100, r.cfg.growthMiB),
		strings.Join(verdict, ", ")+map[bool]string{true: " (reported only in the short form)", false: ""}[r.cfg.short])
	add("wall time", fmt.Sprintf("%v (services start to end of drain)", r.wall.Round(time.Second)))
	loadMarkdown(w, sum)
}

// intervalLatency is the p50 and p99 of load-purchase's latency over the
// webhooks first received in (from, to].
func (r *loadReport) intervalLatency(from, to time.Time) []string {
	var v []int64
	for _, p := range r.recv.points {
		if p.campaign == "load-purchase" && p.atUs > from.UnixMicro() && p.atUs <= to.UnixMicro() {
			v = append(v, p.latencyUs)
		}
	}
	if len(v) == 0 {
		return []string{"", ""}
	}
	slices.Sort(v)
	return []string{loadDur(v[rank(0.5, len(v))]), loadDur(v[rank(0.99, len(v))])}
}

// rank is the nearest-rank index of quantile q among n sorted values.
func rank(q float64, n int) int {
	return min(max(int(q*float64(n)+0.999999)-1, 0), n-1)
}

// loadGrowth compares a process's mean RSS over the middle and the last
// third of the production window, judged at equal backlog: a consumer
// that falls behind (on this shared machine, whenever other work takes the
// CPU) holds fuller fetch buffers and larger batches, bounded by the fetch
// limits, and its RSS rises and falls with its lag. So each third counts
// only the samples in which the process's consumer group was caught up
// (lag under a second of events); a middle third behind for most of it
// counts all its samples, and a last third behind for most of it is
// replaced by the RSS once drained at the end of the run, which a leak
// would keep as well.
type loadGrowth struct {
	name                     string
	first, middle, last, max float64 // MiB; middle and last as judged
	midAll, lastAll, drained float64 // MiB: every sample of a third, the final sample
	how                      string  // how middle and last were taken
}

// loadServiceGroup is the consumer group that says whether a process is
// caught up.
var loadServiceGroup = map[string]string{"ingest": "hookstream-ingest", "evaluator": "hookstream-evaluator", "timer": "hookstream-timer", "dispatcher": "hookstream-dispatcher"}

// grew reports growth past both limits: a Go heap swings by up to its live
// size between collections and Pebble's memtables fill and flush in
// steps, so a small or proportionally small rise is noise; a leak of even
// 100 bytes per event at 5,000 events/s is 50 MiB per 100-second third.
func (g loadGrowth) grew(cfg loadConfig) bool {
	d := g.last - g.middle
	return d > float64(cfg.growthMiB) && d > cfg.growth*g.middle
}

func (r *loadReport) rssGrowth() []loadGrowth {
	d := r.prodEnd.Sub(r.prodStart)
	m0, m1 := r.prodStart.Add(d/3), r.prodStart.Add(2*d/3)
	caughtUp := func(s loadSample, name string) bool {
		g, ok := loadServiceGroup[name]
		return !ok || s.lag[g] >= 0 && s.lag[g] < int64(max(r.cfg.rate, 1000))
	}
	var out []loadGrowth
	for _, name := range append(slices.Clone(loadServices), "harness", "redis") {
		g := loadGrowth{name: name, first: -1}
		var mid, last, midUp, lastUp []float64
		for _, s := range r.samples {
			v := float64(s.rss[name]) / mib
			if s.rss[name] < 0 {
				continue
			}
			if g.first < 0 {
				g.first = v
			}
			g.max, g.drained = max(g.max, v), v
			switch {
			case !s.at.Before(m0) && s.at.Before(m1):
				mid = append(mid, v)
				if caughtUp(s, name) {
					midUp = append(midUp, v)
				}
			case !s.at.Before(m1) && !s.at.After(r.prodEnd):
				last = append(last, v)
				if caughtUp(s, name) {
					lastUp = append(lastUp, v)
				}
			}
		}
		g.midAll, g.lastAll = mean(mid), mean(last)
		g.middle, g.last = mean(midUp), mean(lastUp)
		var how []string
		if len(midUp) < 3 || 2*len(midUp) < len(mid) {
			g.middle = g.midAll
			how = append(how, "middle third behind: all its samples")
		}
		if len(lastUp) < 3 || 2*len(lastUp) < len(last) {
			g.last = g.drained
			how = append(how, "last third behind: RSS once drained")
		}
		g.how = strings.Join(how, "; ")
		out = append(out, g)
	}
	return out
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// latencyCell gives p50 / p99 / p999 / max (nearest rank) of µs values.
func latencyCell(us []int64) string {
	if len(us) == 0 {
		return "none"
	}
	v := slices.Clone(us)
	slices.Sort(v)
	q := func(p float64) string { return loadDur(v[rank(p, len(v))]) }
	return fmt.Sprintf("p50 %s, p99 %s, p999 %s, max %s (%d webhooks)", q(0.50), q(0.99), q(0.999), loadDur(v[len(v)-1]), len(v))
}

func loadDur(us int64) string {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d < 10*time.Millisecond && d > -10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(us)/1000)
	case d < 10*time.Second && d > -10*time.Second:
		return fmt.Sprintf("%.0fms", float64(us)/1000)
	default:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
}

func lagCell(n int64) string {
	if n < 0 {
		return "?"
	}
	return strconv.FormatInt(n, 10)
}

func mibCell(b int64) string {
	if b < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f", float64(b)/mib)
}

// loadTable prints rows right-aligned in columns.
func loadTable(w io.Writer, rows [][]string) {
	width := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			fmt.Fprintf(&b, "%*s", width[i], c)
		}
		fmt.Fprintln(w, b.String())
	}
}

// loadMarkdown prints a two-column markdown table.
func loadMarkdown(w io.Writer, rows [][]string) {
	for i, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
		if i == 0 {
			fmt.Fprintln(w, "| --- | --- |")
		}
	}
}

// cpuShares is each process's mean CPU share while producing (from the
// sample taken as production starts to the last one before it ends), and
// its CPU time per event over the whole run, drain included, when every
// event has been processed: a share alone would flatter a stage that fell
// behind.
func (r *loadReport) cpuShares() string {
	if len(r.samples) < 2 || r.prod.acked == 0 {
		return "?"
	}
	base, final := &r.samples[0], &r.samples[len(r.samples)-1]
	last := base
	for i := range r.samples {
		if !r.samples[i].at.After(r.prodEnd) {
			last = &r.samples[i]
		}
	}
	dt := last.at.Sub(base.at).Seconds()
	if dt <= 0 {
		return "?"
	}
	var parts []string
	total := 0.0
	for _, name := range append(slices.Clone(loadServices), "harness", "redis") {
		if base.cpu[name] < 0 || last.cpu[name] < 0 || final.cpu[name] < 0 {
			parts = append(parts, name+" ?")
			continue
		}
		pct := 100 * (last.cpu[name] - base.cpu[name]) / dt
		total += pct
		parts = append(parts, fmt.Sprintf("%s %.0f%% (%.0f µs/event)", name, pct, 1e6*(final.cpu[name]-base.cpu[name])/float64(r.prod.acked)))
	}
	m := machineShares(base.machine, last.machine)
	return fmt.Sprintf("%s; together %.0f%% of %d00%%; the whole machine was busy %s of the time (iowait %s, steal %s)",
		strings.Join(parts, ", "), total, runtime.NumCPU(), m[0], m[1], m[2])
}
