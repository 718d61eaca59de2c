package agent

import "github.com/farego/farego/agent/ridertext"

// RiderMessage returns the text a rider sees for key (a reason, or
// ridertext.KeyPaid) in the agent's language (Config.Language): what a
// display shows. A language the catalog lacks falls back to English.
func (a *Agent) RiderMessage(key string) string {
	return ridertext.Message(a.cfg.Language, key)
}

// RiderText returns the catalog in the agent's language, for a display
// driver to word events itself.
func (a *Agent) RiderText() ridertext.Catalog {
	return ridertext.For(a.cfg.Language)
}
