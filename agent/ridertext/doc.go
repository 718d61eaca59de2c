// Package ridertext is the catalog of the short texts a rider sees on a
// validator ("Paid", "Code expired - refresh it"), in every language the
// validator speaks: English (en) and Simplified Chinese (zh-Hans).
//
// Texts are looked up by a stable key: the refusal reasons of
// agent/paycode and agent ("code_expired", "denied", …), plus [KeyPaid] and
// [KeyNotAccepted]. The keys never change with the language; logs, metrics
// and the server speak in keys, riders read texts.
//
// The agent words every outcome with [Catalog.Message] for the language in
// validator.toml; the feedback outputs (console, lights, a display) receive
// the text with the key beside it where there is one. A display driver that
// wants another language, or two at once, looks the key up itself with
// [For] or [Message].
//
// # Caveats
//
// Texts are short on purpose (a 2-line display, a 16-character LCD line for
// English). They hold no control characters; the console replaces any that
// a future entry might bring. A key missing from a language falls back to
// English, then to the English "Not accepted": the tests make sure no key
// is missing.
package ridertext
