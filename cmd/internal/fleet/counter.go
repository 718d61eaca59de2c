package fleet

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Counter returns the number of taps the ledger holds.
type Counter func(ctx context.Context) (int64, error)

// TapsMetric is the settlement server's gauge of the taps in its ledger: a
// kept figure, read at most once a second per instance (any instance: they
// share the ledger).
const TapsMetric = "farego_ledger_taps"

// MetricsCounter reads TapsMetric from the server's GET /metrics (a
// Prometheus text exposition) at base: the base URL of its HTTP API, or of
// the address of its own that run --metrics serves it on.
func MetricsCounter(base string) Counter {
	url := strings.TrimRight(base, "/") + "/metrics"
	return func(ctx context.Context) (int64, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return 0, fmt.Errorf("%w: GET %s: %s", ErrNoMetrics, url, resp.Status)
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%w: GET %s: %s", ErrServer, url, resp.Status)
		}
		return metricValue(io.LimitReader(resp.Body, 4<<20), TapsMetric)
	}
}

// metricValue returns the value of the unlabelled sample name in a
// Prometheus text exposition. A negative value is the server's sign that
// it could not read the ledger.
func metricValue(r io.Reader, name string) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, fmt.Errorf("%w: %s sample %q has no value", ErrServer, name, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || v != v || v > 1<<62 {
			return 0, fmt.Errorf("%w: %s sample %q", ErrServer, name, line)
		}
		if v < 0 {
			return 0, fmt.Errorf("%w: %s is %v: the server cannot read its ledger", ErrServer, name, v)
		}
		return int64(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%w: no %s in /metrics", ErrServer, name)
}
