package console

import (
	"math"
	"strings"
	"testing"
)

// TestBarScale: a bar chart's grid has zero on it, round steps, room for
// every value, and no more than six lines; a chart of refunds alone is
// scaled below zero only (it was labelled 1.00, -49.25, -99.50, -149.75).
func TestBarScale(t *testing.T) {
	for _, c := range []struct{ lo, hi, min float64 }{
		{-150, 0, 100}, {0, 0, 100}, {0, 0, 4}, {0, 3, 4}, {-5, 1234, 100}, {-9875, 120, 100}, {0, 98765, 100}, {-1, 0, 1},
	} {
		lo, hi, step := barScale(c.lo, c.hi, c.min)
		mant := step / math.Pow(10, math.Floor(math.Log10(step)))
		if lo > c.lo || hi < c.hi || hi-lo < c.min || (mant != 1 && mant != 2 && mant != 5) ||
			math.Mod(-lo, step) != 0 || (hi-lo)/step > 5 {
			t.Errorf("barScale(%g, %g, %g) = %g, %g, %g", c.lo, c.hi, c.min, lo, hi, step)
		}
	}
	if lo, hi, step := barScale(-150, 0, 100); hi != 0 || lo != -150 || step != 50 {
		t.Errorf("refunds only: %g to %g by %g, want -150 to 0 by 50", lo, hi, step)
	}
	page := string(correctionsChartFor(t))
	for _, want := range []string{">0.00<", ">-0.50<", ">-1.00<", ">-1.50<"} {
		if !strings.Contains(page, want) {
			t.Errorf("corrections chart lacks the label %s:\n%s", want, page)
		}
	}
}

func correctionsChartFor(t *testing.T) string {
	t.Helper()
	return string(stackedBars("Corrections", []string{"d1", "d2"}, []series{{"corrections", "c-corr", []int64{-150, -20}}}, 100, moneyText("EUR")))
}
