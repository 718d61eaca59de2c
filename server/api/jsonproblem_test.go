package api

import (
	"errors"
	"strings"
	"testing"
)

// A bad body is told in the API's terms: what the field must be, not Go's
// types ("cannot unmarshal array into Go value of type struct {
// MerchantID string …}"), nor "EOF" for an empty body.
func TestBadJSONMessages(t *testing.T) {
	for body, want := range map[string]string{
		``:                              "the body is empty",
		`[]`:                            "the body must be a JSON object, not an array",
		`"x"`:                           "the body must be a JSON object, not a string",
		`{"amount":"1"}`:                `"amount" must be a whole number, not a string`,
		`{"amount":1.5}`:                `"amount" must be a whole number, not a number 1.5`,
		`{"amount":22.50}`:              `"amount" must be a whole number, not a number 22.50 (amounts are whole minor units of the currency: 2250 for 22.50 EUR)`,
		`{"reference":5}`:               `"reference" must be a string, not a number`,
		`{"amount":1`:                   "ends too soon",
		`{"amount":}`:                   "not JSON (at byte",
		`{"amount":1,"bogus":true}`:     `unknown field "bogus"`,
		`{"amount":1,"reference":"a"}x`: "trailing data",
	} {
		var req struct {
			Amount    int64  `json:"amount"`
			Reference string `json:"reference"`
		}
		err := decodeStrict([]byte(body), &req)
		var ae *apiError
		if !errors.As(err, &ae) || ae.code != "bad_json" || !strings.Contains(ae.msg, want) || strings.Contains(ae.msg, "Go value") {
			t.Errorf("%s: %v; want bad_json saying %q", body, err, want)
		}
	}
}
