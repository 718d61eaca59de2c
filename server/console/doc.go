// Package console is the operator's console: web pages, served by
// farego-settlement run at /console/, to see and run the fleet and the
// money from a browser.
//
// The pages are server-rendered html/template with embedded CSS and
// server-rendered SVG charts: no JavaScript at all, no CDN, no build step.
// Tables sort and filter through links and GET forms; every change is a
// POST form that first shows a confirmation page.
//
//   - Overview: the fleet by state, today's taps and revenue, flagged taps,
//     records kept aside, document versions, the latest audit entries.
//   - Fleet: every device with its state (online, offline, unknown,
//     revoked), when it was last heard (server time), queue depth and
//     oldest unsent tap, clock offset, route and vehicle of its last tap,
//     software and document versions; problems first; a device's page with
//     its recent taps and status history.
//   - Money: revenue by service day and by route (charges, transfers, cap
//     savings, corrections), settlement lag percentiles and taps settled
//     per hour, flagged taps and records kept aside by reason with what
//     the operator can do, an account's page.
//   - Actions: deny or clear an account or credential, revoke or replace a
//     device, ask a device (or all) to replay, publish a fare table
//     (validated, with a preview of what changes), rotate the issuer key,
//     create and revoke API tokens; the audit trail.
//
// # Sign-in and sessions
//
// One signs in with an operator or auditor API token (or the operator
// token file init wrote, whose principal is "init"). The browser gets a
// random 32-byte session secret in a cookie (HttpOnly, SameSite=Strict,
// Path /console/, Secure when the browser reached the console over https);
// the ledger keeps only its SHA-256 (ledger.ConsoleSession), so every
// settlement instance sharing the ledger knows the session, and signing out
// ends it on all of them. Each request checks the session (not ended, not
// past its lifetime or idle timeout) and the token behind it (not revoked):
// revoking the token ends its sessions at once.
//
// Every POST must come from the console itself: its Origin (or Referer)
// must name the request's host and a Sec-Fetch-Site header, if any, must
// say same-origin; and its form must carry the session's CSRF token (an
// HMAC of the session secret). A sign-in POST is checked the same way,
// without the CSRF token (there is no session yet).
//
// # Changes
//
// Every change goes through the JSON API's own handler (api.Handler's
// ServeAs, with the session's role): the same validation, role checks,
// publication to the fleet and audit trail as a script's request, written
// as "token:ID (role) via console". An auditor's session sees every page
// and changes nothing: the buttons are not shown and the console, then the
// API, refuse its POSTs.
//
// # Summaries
//
// Revenue and settlement lag come from summaries the ledger keeps
// (ledger.Store.RefreshSummaries), refreshed by Run every few seconds (less
// often when a refresh takes long): pages read them, never the millions of
// taps. Each page says when its summaries were computed. A refresh sums
// from one snapshot and stores the days and the lag in one transaction,
// and a page reads both in one (ledger.Store.Summaries): they agree.
//
// # Caveats
//
// Amounts are shown with two decimals in the latest fare table's currency.
// The console has no JavaScript, so it does not refresh itself unless
// asked to (the fleet and overview pages take ?refresh=N seconds, a meta
// refresh).
package console
