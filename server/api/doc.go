// Package api is the settlement server's HTTP JSON API.
//
// Riders authenticate with their account's secret, operators (and
// merchants' scanners, for online payments) with the operator token, both as
// "Authorization: Bearer …". Every error is a 4xx or 5xx with a JSON body
//
//	{"error": {"code": "insufficient_funds", "message": "…"}}
//
// whose code is stable API. Request bodies are size-limited and decoded
// strictly (unknown fields are errors); a refused request changes nothing.
//
//	POST   /v1/accounts                      create an account → {account, secret}  (open)
//	GET    /v1/accounts/{id}                 balance, deny state, recent rides       (rider, operator)
//	GET    /v1/accounts/{id}/rides           rides with their current charge         (rider, operator)
//	POST   /v1/accounts/{id}/topups          add money, idempotent on reference      (operator)
//	POST   /v1/accounts/{id}/credentials     issue a credential (+ token seed)      (rider)
//	POST   /v1/payments                      online payment with a code             (operator/merchant)
//	POST   /v1/devices                       register a validator's public key      (operator)
//	GET    /v1/devices                       validators with last status            (operator)
//	POST   /v1/devices/{id}/replay           ask a device to resend its archive     (operator)
//	GET    /v1/fares                         current fare table                     (open)
//	PUT    /v1/fares                         upload a new fare table, published     (operator)
//	GET    /v1/keyring                       issuer keyring                          (open)
//	POST   /v1/keyring/rotate                rotate the issuer key, published       (operator)
//	GET    /v1/denylist                      the deny list                           (operator)
//	POST   /v1/denylist                      deny an account or credential          (operator)
//	DELETE /v1/denylist                      lift an operator's deny entry          (operator)
//	POST   /v1/taps/void                     void a wrongly charged tap (re-rated)  (operator)
//	GET    /healthz                          liveness and readiness                  (open)
//	GET    /metrics                          Prometheus metrics                      (open)
package api
