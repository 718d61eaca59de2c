package api

import (
	"net/http"

	"github.com/farego/farego/server/ledger"
)

// RevenueDay is the fares of one service day (and route, in Days and
// Routes): amounts in minor units of the ledger's currency.
type RevenueDay struct {
	Day   string `json:"day,omitempty"`   // absent in a route's totals and the total
	Route string `json:"route,omitempty"` // absent in a day's and the range's totals
	// Taps counts every tap, flagged ones (charged nothing) included.
	Taps    int64 `json:"taps"`
	Flagged int64 `json:"flagged"`
	// BaseTotal = Charged + TransferSavings + CapSavings.
	BaseTotal       int64 `json:"base_total"`
	Charged         int64 `json:"charged"`
	Transfers       int64 `json:"transfers"`
	TransferSavings int64 `json:"transfer_savings"`
	Capped          int64 `json:"capped"`
	CapSavings      int64 `json:"cap_savings"`
	// Corrected counts taps whose charge changed after their first
	// posting (a late tap re-rated their day); Corrections is what those
	// changes made (below zero: given back), within Charged.
	Corrected   int64 `json:"corrected"`
	Corrections int64 `json:"corrections"`
}

func revenueDay(s ledger.DaySummary) RevenueDay {
	return RevenueDay{Day: s.Day, Route: s.Route, Taps: s.Taps, Flagged: s.Flagged, BaseTotal: s.BaseTotal,
		Charged: s.Charged, Transfers: s.Transfers, TransferSavings: s.TransferSavings, Capped: s.Capped,
		CapSavings: s.CapSavings, Corrected: s.Corrected, Corrections: s.Corrections}
}

// RevenueResponse is GET /v1/revenue's answer.
type RevenueResponse struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Currency string `json:"currency"`
	// Days are the range's service days with a tap, by day then route;
	// DayTotals the same days summed over their routes; Routes each
	// route's totals over the range.
	Days      []RevenueDay `json:"days"`
	DayTotals []RevenueDay `json:"day_totals"`
	Routes    []RevenueDay `json:"routes"`
	Total     RevenueDay   `json:"total"`
}

// revenue answers the fare revenue per service day from ?from= to ?to=
// (YYYY-MM-DD, inclusive, at most ledger.MaxSettlementDays), by route:
// the console's money page, for an operator's accounts. The figures are
// the console's summaries, refreshed from the ledger every few seconds
// (console.DefaultRefreshInterval). Operator and auditor tokens.
func (h *Handler) revenue(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	q := r.URL.Query()
	from, to := q.Get("from"), q.Get("to")
	if _, _, err := ledger.SettlementRange(from, to); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "%v", err)
	}
	sums, err := h.cfg.Ledger.Revenue(r.Context(), from, to)
	if err != nil {
		return nil, 0, err
	}
	out := RevenueResponse{From: from, To: to, Currency: h.cfg.Ledger.Currency(),
		Days: []RevenueDay{}, DayTotals: []RevenueDay{}, Routes: []RevenueDay{}}
	for _, x := range sums {
		out.Days = append(out.Days, revenueDay(x))
	}
	t := ledger.Totals(sums)
	for _, d := range t.Days {
		out.DayTotals = append(out.DayTotals, revenueDay(d))
	}
	for _, r := range t.Routes {
		out.Routes = append(out.Routes, revenueDay(r))
	}
	out.Total = revenueDay(t.Total)
	return out, http.StatusOK, nil
}
