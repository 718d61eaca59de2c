package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/internal/clientaddr"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

const (
	// CookieName is the session cookie's name.
	CookieName = "farego_console"
	// initTokenID is the principal of the operator token file.
	initTokenID = ledger.InitTokenID
	// csrfField is the hidden form field with the session's CSRF token.
	csrfField = "csrf"
	// maxForm bounds a POST body: a fare table (twice: as text and as a
	// file) and a few fields.
	maxForm = 2*fare.MaxTableSize + 64<<10
	// maxSignInForm bounds the sign-in POST.
	maxSignInForm = 4 << 10
	// touchEvery is how often a session's last use is written.
	touchEvery = time.Minute
)

// sess is a live session, as a request sees it.
type sess struct {
	hash    []byte
	tokenID string
	role    string
	csrf    string
}

// CanChange reports whether the session may change anything (an auditor's
// may not).
func (s *sess) CanChange() bool { return s.role == ledger.RoleOperator }

// Role is the session's role.
func (s *sess) Role() string { return s.role }

// TokenID is the id of the token signed in with ("init": the token file).
func (s *sess) TokenID() string { return s.tokenID }

// CSRF is the session's CSRF token, for forms.
func (s *sess) CSRF() string { return s.csrf }

func (s *sess) actor() string { return "token:" + s.tokenID + " (" + s.role + ") via console" }

// csrfToken derives a session's CSRF token from its secret.
func csrfToken(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("farego console csrf v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// parseCookie reads a session cookie's value: 32 bytes, base64url without
// padding. It returns the secret and its hash.
func parseCookie(v string) (secret, hash []byte, err error) {
	if len(v) != 43 {
		return nil, nil, ErrNoSession
	}
	secret, err = base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(secret) != 32 {
		return nil, nil, ErrNoSession
	}
	sum := sha256.Sum256(secret)
	return secret, sum[:], nil
}

// currentSession returns the request's live session, or ErrNoSession.
func (h *Handler) currentSession(r *http.Request) (*sess, error) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return nil, ErrNoSession
	}
	secret, hash, err := parseCookie(c.Value)
	if err != nil {
		return nil, err
	}
	cs, err := h.cfg.Ledger.Session(r.Context(), hash)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, err
	}
	now := h.cfg.Now()
	if !cs.Ended.IsZero() || !now.Before(cs.Expires) || now.Sub(cs.Seen) > h.cfg.IdleTimeout {
		return nil, fmt.Errorf("%w: session ended or expired", ErrNoSession)
	}
	if cs.Role != ledger.RoleOperator && cs.Role != ledger.RoleAuditor {
		return nil, fmt.Errorf("%w: role %s", ErrNoSession, cs.Role)
	}
	tokenID := cs.TokenID
	if fp, ok := strings.CutPrefix(cs.TokenID, initTokenID+":"); ok {
		// Signed in with the operator token file: live while the file
		// holds that token. Ending the sessions when token revoke init
		// replaces it missed those signed in with the old token after
		// (on an instance not given the new file yet, or within the
		// second a server reads it): they kept operator rights to their
		// expiry.
		if fp != h.cfg.Keys.CurrentTokenFingerprint() {
			return nil, fmt.Errorf("%w: the operator token file holds another token", ErrNoSession)
		}
		tokenID = initTokenID
	} else if cs.TokenID != initTokenID { // "init" alone: a session of the release before
		tok, err := h.cfg.Ledger.TokenByID(r.Context(), cs.TokenID)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			return nil, fmt.Errorf("%w: token %s is gone", ErrNoSession, cs.TokenID)
		case err != nil:
			return nil, err
		case !tok.Revoked.IsZero() || tok.Role != cs.Role:
			return nil, fmt.Errorf("%w: token %s was revoked", ErrNoSession, cs.TokenID)
		}
	}
	// A page reloading itself (?refresh=N) is not someone at the console:
	// an operator's session left refreshing still ends after the idle
	// timeout. An auditor's (read-only: a wall display) is kept alive by
	// it, up to its lifetime.
	// A person's click on such a page (its sort, page and filter links
	// keep ?refresh) is a use: the browser marks a navigation a person
	// started (Sec-Fetch-User: ?1), never a meta refresh.
	autoRefresh := r.Method == http.MethodGet && refreshOf(r) > 0 && r.Header.Get("Sec-Fetch-User") != "?1"
	if now.Sub(cs.Seen) > touchEvery && (!autoRefresh || cs.Role == ledger.RoleAuditor) {
		if err := h.cfg.Ledger.TouchSession(r.Context(), hash, now); err != nil {
			h.log.Warn("console: recording a session's use failed", "err", err)
		}
	}
	return &sess{hash: hash, tokenID: tokenID, role: cs.Role, csrf: csrfToken(secret)}, nil
}

// checkOrigin refuses a POST that does not come from the console's own
// pages: a Sec-Fetch-Site other than same-origin, or an Origin (or, without
// one, a Referer) whose host is not the request's.
func checkOrigin(r *http.Request) error {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return fmt.Errorf("%w: Sec-Fetch-Site %s", ErrCrossSite, s)
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return fmt.Errorf("%w: no Origin or Referer", ErrCrossSite)
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.Host != r.Host || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%w: from %.100q", ErrCrossSite, o)
	}
	return nil
}

// session wraps a handler that needs a live session. A GET without one is
// sent to the sign-in page; a POST must come from the console (checkOrigin)
// and carry the session's CSRF token.
func (h *Handler) session(next func(http.ResponseWriter, *http.Request, *sess)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if err := checkOrigin(r); err != nil {
				h.refused(r, "console: cross-site request refused", "path", api.ClipPath(r.URL.Path), "err", err)
				h.errorPage(w, r, nil, http.StatusForbidden, "Refused", "This request did not come from the console's own pages, so nothing was done.")
				return
			}
		}
		s, err := h.currentSession(r)
		if err != nil {
			if !errors.Is(err, ErrNoSession) {
				if api.ClientGone(r, err) {
					return // nobody to answer, and no fault of the server's
				}
				if r.Method != http.MethodPost && (errors.Is(err, context.DeadlineExceeded) ||
					errors.Is(r.Context().Err(), context.DeadlineExceeded)) {
					h.fail(w, r, nil, err) // PageTimeout: 503, the ledger too slow
					return
				}
				if h.ledgerDown(w, r, nil) {
					return
				}
				h.log.Error("console: reading the session failed", "err", err)
				h.errorPage(w, r, nil, http.StatusInternalServerError, "Server error", "The session could not be read; see the server log.")
				return
			}
			if r.Method == http.MethodGet && strictCookieWithheld(r) {
				// A link on another site (a Grafana panel, a chat, an
				// e-mail): the browser kept the SameSite=Strict cookie
				// back. The page reloads itself from here, which sends
				// it; a browser signed out gets the sign-in page then.
				h.render(w, r, http.StatusOK, "continue", page{Title: "Opening the console", Reload: true, Currency: "-",
					Data: r.URL.RequestURI()})
				return
			}
			if r.Method == http.MethodGet {
				target := h.cfg.Prefix + "signin"
				if r.URL.Path != h.cfg.Prefix {
					target += "?next=" + url.QueryEscape(r.URL.RequestURI())
				}
				http.Redirect(w, r, target, http.StatusSeeOther)
				return
			}
			h.errorPage(w, r, nil, http.StatusUnauthorized, "Signed out", "Your session has ended. Sign in again; nothing was done.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			var perr error
			if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
				perr = r.ParseMultipartForm(maxForm)
			} else {
				perr = r.ParseForm()
			}
			if perr != nil {
				h.errorPage(w, r, s, http.StatusBadRequest, "Bad request", "The form could not be read (too large?); nothing was done.")
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue(csrfField)), []byte(s.csrf)) != 1 {
				h.log.Warn("console: POST without the session's CSRF token refused", "path", api.ClipPath(r.URL.Path), "token", s.tokenID)
				h.errorPage(w, r, s, http.StatusForbidden, "Refused", "This form did not carry this session's token, so nothing was done. Reload the page and try again.")
				return
			}
		}
		next(w, r, s)
	}
}

// strictCookieWithheld reports whether r is a page opened from another
// site without the session cookie: SameSite=Strict keeps it back from a
// navigation another site started, even when the browser holds a live
// session.
func strictCookieWithheld(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") != "cross-site" || r.Header.Get("Sec-Fetch-Mode") != "navigate" {
		return false
	}
	_, err := r.Cookie(CookieName)
	return err != nil
}

func (h *Handler) signInPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(h.cfg.Prefix, r.URL.Query().Get("next"))
	if _, err := h.currentSession(r); err == nil {
		// Signed in meanwhile (in another tab): on to the page asked for.
		if next == "" {
			next = h.cfg.Prefix
		}
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	h.render(w, r, http.StatusOK, "signin", page{Title: "Sign in", Data: signInData{Next: next}})
}

type signInData struct {
	Next, Error string
}

// safeNext returns next if it is a path inside the console, else "".
func safeNext(prefix, next string) string {
	if !strings.HasPrefix(next, prefix) || strings.Contains(next, "//") || strings.Contains(next, `\`) ||
		strings.ContainsAny(next, "\r\n") {
		return ""
	}
	return next
}

// signIn checks an operator or auditor token and starts a session.
func (h *Handler) signIn(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r); err != nil {
		h.refused(r, "console: cross-site sign-in refused", "err", err)
		h.errorPage(w, r, nil, http.StatusForbidden, "Refused", "This request did not come from the console's own pages.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxSignInForm)
	if err := r.ParseForm(); err != nil {
		h.errorPage(w, r, nil, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return
	}
	next := safeNext(h.cfg.Prefix, r.PostFormValue("next"))
	fail := func(msg string) {
		h.render(w, r, http.StatusForbidden, "signin", page{Title: "Sign in", Data: signInData{Next: next, Error: msg}})
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	// Pasted as the API takes it ("Authorization: Bearer …", as init's
	// summary shows it): the token is what follows.
	if rest, ok := strings.CutPrefix(tok, "Bearer "); ok {
		tok = strings.TrimSpace(rest)
	}
	var id, role, sessionID string
	switch {
	case tok == "":
		fail("Enter an API token.")
		return
	case h.cfg.Keys.CheckToken(tok):
		// The session keeps which token of the file it was signed in
		// with (see currentSession).
		id, role, sessionID = initTokenID, ledger.RoleOperator, initTokenID+":"+keys.TokenFingerprint(tok)
	case strings.HasPrefix(tok, api.TokenPrefix):
		t, err := api.TokenByText(r.Context(), h.cfg.Ledger, tok)
		if err != nil && !errors.Is(err, ledger.ErrNotFound) {
			if api.ClientGone(r, err) {
				return
			}
			if h.ledgerDown(w, r, nil) {
				return
			}
			h.log.Error("console: reading a token failed", "err", err)
			h.errorPage(w, r, nil, http.StatusInternalServerError, "Server error", "The token could not be checked; see the server log.")
			return
		}
		if err == nil && t.Revoked.IsZero() {
			id, role = t.ID, t.Role
		}
	}
	if role != ledger.RoleOperator && role != ledger.RoleAuditor {
		h.refused(r, "console: sign-in refused", "token", id, "role", role)
		fail("This token cannot sign in to the console: it is unknown, revoked, or not an operator's or an auditor's.")
		return
	}
	if ok, wait := h.signIns.Allow(id); !ok {
		h.refused(r, "console: sign-in over the token's rate refused", "token", id)
		w.Header().Set("Retry-After", api.RetryAfter(wait))
		h.render(w, r, http.StatusTooManyRequests, "signin", page{Title: "Sign in", Data: signInData{Next: next,
			Error: "Too many sign-ins with this token: try again in a minute (its sessions already open still work)."}})
		return
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	sum := sha256.Sum256(secret)
	now := h.cfg.Now()
	if sessionID == "" {
		sessionID = id
	}
	if err := h.cfg.Ledger.CreateSession(r.Context(), ledger.ConsoleSession{IDHash: sum[:], TokenID: sessionID, Role: role,
		Created: now, Expires: now.Add(h.cfg.SessionTTL)}); err != nil {
		if api.ClientGone(r, err) || h.ledgerDown(w, r, nil) {
			return
		}
		h.log.Error("console: starting a session failed", "err", err)
		h.errorPage(w, r, nil, http.StatusInternalServerError, "Server error", "The session could not be started; see the server log.")
		return
	}
	s := &sess{tokenID: id, role: role}
	h.auditSelf(r, s, "console_signin")
	h.log.Info("console: signed in", "token", id, "role", role)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: base64.RawURLEncoding.EncodeToString(secret), Path: h.cfg.Prefix,
		MaxAge: int(h.cfg.SessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
	if next == "" {
		next = h.cfg.Prefix
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// secureRequest reports whether the browser reached the console over
// https (directly, or through a TLS-terminating proxy: its Origin says so).
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(r.Header.Get("Origin"), "https://") ||
		strings.HasPrefix(r.Header.Get("Referer"), "https://")
}

func (h *Handler) signOut(w http.ResponseWriter, r *http.Request, s *sess) {
	if err := h.cfg.Ledger.EndSession(r.Context(), s.hash); err != nil {
		h.log.Error("console: ending a session failed", "err", err)
		h.errorPage(w, r, s, http.StatusInternalServerError, "Server error", "The session could not be ended; see the server log.")
		return
	}
	h.auditSelf(r, s, "console_signout")
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: h.cfg.Prefix, MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
	http.Redirect(w, r, h.cfg.Prefix+"signin", http.StatusSeeOther)
}

// refused logs a request refused before any session (cross-site, a sign-in
// with a bad token) at most once a minute per kind and client address,
// saying how many were held back: anyone may send them at any rate (an
// attack review had one client log 5,300 refused sign-ins a second, and
// 50 MiB a second of cross-site refusals, each with a 30 KiB path).
// Behind a reverse proxy its clients share its address here.
func (h *Handler) refused(r *http.Request, msg string, args ...any) {
	remote := clientaddr.Key(r.RemoteAddr)
	if ok, n := h.refusals.Allow(msg + " " + remote); ok {
		h.log.Warn(msg, append(args, "remote", remote, "suppressed", n)...)
	}
}

// auditSelf writes a console event of the session (sign-in, sign-out) to
// the audit trail; a failure is logged.
func (h *Handler) auditSelf(r *http.Request, s *sess, action string) {
	if err := h.cfg.Ledger.Audit(r.Context(), ledger.AuditEntry{Actor: s.actor(), Action: action}); err != nil {
		h.log.Error("console: writing the audit trail failed", "action", action, "err", err)
	}
}
