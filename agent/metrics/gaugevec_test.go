package metrics

import (
	"strings"
	"testing"
)

func TestGaugeVecFunc(t *testing.T) {
	r := NewRegistry()
	r.GaugeVecFunc("farego_device_up", "Devices online.", []string{"device"}, func(emit func(float64, ...string)) {
		emit(1, "bus-1")
		emit(0, `bus"2`)
		emit(5, "too", "many") // dropped
	})
	var b strings.Builder
	r.WriteTo(&b)
	want := `# HELP farego_device_up Devices online.
# TYPE farego_device_up gauge
farego_device_up{device="bus-1"} 1
farego_device_up{device="bus\"2"} 0
`
	if got := b.String(); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}
}
