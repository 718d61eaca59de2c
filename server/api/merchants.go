package api

import (
	"net/http"

	"github.com/farego/farego/server/ledger"
)

// MerchantDay is one merchant's service day in a settlement report:
// amounts in minor units of the ledger's currency.
type MerchantDay struct {
	Day        string `json:"day,omitempty"` // absent in a merchant's totals
	MerchantID string `json:"merchant_id,omitempty"`
	Payments   int64  `json:"payments"`
	Paid       int64  `json:"paid"`
	Refunds    int64  `json:"refunds"`
	Refunded   int64  `json:"refunded"`
	Net        int64  `json:"net"`
}

func merchantDay(d ledger.MerchantDay) MerchantDay {
	return MerchantDay{Day: d.Day, MerchantID: d.MerchantID, Payments: d.Payments, Paid: d.Paid, Refunds: d.Refunds,
		Refunded: d.Refunded, Net: d.Net()}
}

// SettlementResponse is GET /v1/merchants/settlement's answer.
type SettlementResponse struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Currency string `json:"currency"`
	// TimeZone and ServiceDayStart decide the service days (the latest
	// fare table's, as the console's money page).
	TimeZone        string `json:"timezone"`
	ServiceDayStart string `json:"service_day_start"`
	// Days are the merchants' days with a payment or a refund, by day,
	// then merchant; Merchants their totals over the range, by merchant.
	Days      []MerchantDay `json:"days"`
	Merchants []MerchantDay `json:"merchants"`
	Total     MerchantDay   `json:"total"`
}

// settlement answers what each merchant took online and gave back, per
// service day from ?from= to ?to= (YYYY-MM-DD, inclusive, at most
// ledger.MaxSettlementDays), all merchants or ?merchant=: what the
// operator pays shops out. Operator and auditor tokens.
func (h *Handler) settlement(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.staff(r, readers...); err != nil {
		return nil, 0, err
	}
	q := r.URL.Query()
	from, to, merchant := q.Get("from"), q.Get("to"), q.Get("merchant")
	if _, _, err := ledger.SettlementRange(from, to); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "%v", err)
	}
	if q.Has("merchant") && merchant == "" {
		return nil, 0, errorf(http.StatusBadRequest, "invalid", "merchant is empty: name a merchant id, or leave merchant out for all")
	}
	st, err := h.cfg.Ledger.MerchantSettlement(r.Context(), from, to, merchant)
	if err != nil {
		return nil, 0, err
	}
	out := SettlementResponse{From: st.From, To: st.To, Currency: h.cfg.Ledger.Currency(), TimeZone: st.TimeZone,
		ServiceDayStart: st.DayStart, Days: []MerchantDay{}, Merchants: []MerchantDay{}, Total: merchantDay(st.Total())}
	for _, d := range st.Days {
		out.Days = append(out.Days, merchantDay(d))
	}
	for _, m := range st.Merchants() {
		out.Merchants = append(out.Merchants, merchantDay(m))
	}
	return out, http.StatusOK, nil
}
