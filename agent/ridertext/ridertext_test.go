package ridertext

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

// TestCatalogComplete: every language has a text for every key and no key
// English lacks; texts are non-empty, short and free of control characters.
func TestCatalogComplete(t *testing.T) {
	if len(Languages()) < 2 {
		t.Fatalf("languages %v: want English and Simplified Chinese at least", Languages())
	}
	for _, lang := range Languages() {
		for _, key := range Keys() {
			if !Has(lang, key) {
				t.Errorf("%s: no text for %q", lang, key)
				continue
			}
			m := Message(lang, key)
			if m == "" || len([]rune(m)) > 40 {
				t.Errorf("%s %s: text %q empty or longer than 40 characters", lang, key, m)
			}
			if strings.IndexFunc(m, unicode.IsControl) >= 0 {
				t.Errorf("%s %s: control character in %q", lang, key, m)
			}
		}
		for key := range catalog[lang] {
			if !Has(English, key) {
				t.Errorf("%s has %q, which English lacks", lang, key)
			}
		}
	}
}

func TestMessage(t *testing.T) {
	tests := []struct {
		lang      Language
		key, want string
	}{
		{English, "code_expired", "Code expired - refresh it"},
		{SimplifiedChinese, "code_expired", "乘车码已过期，请刷新"},
		{SimplifiedChinese, KeyPaid, "支付成功"},
		// The bus is offline, not the phone (it said "go online").
		{English, "risk_cap", "Bus offline: ride limit reached"},
		{English, "no_such_reason", "Not accepted"},
		{SimplifiedChinese, "no_such_reason", "未通过"},
		{Language("fr"), "duplicate", "Already paid"},
	}
	for _, tt := range tests {
		if got := Message(tt.lang, tt.key); got != tt.want {
			t.Errorf("Message(%s, %s): got %q, want %q", tt.lang, tt.key, got, tt.want)
		}
	}
	if got := (Catalog{}).Message(KeyPaid); got != "Paid" {
		t.Errorf("zero Catalog: got %q, want English", got)
	}
	if c := For(SimplifiedChinese); c.Language() != SimplifiedChinese || c.Message("duplicate") != "已支付" {
		t.Errorf("For(zh-Hans): %s %q", c.Language(), c.Message("duplicate"))
	}
}

func TestParse(t *testing.T) {
	for tag, want := range map[string]Language{
		"": English, "en": English, "EN-us": English, "zh-Hans": SimplifiedChinese, "zh": SimplifiedChinese, "zh-CN": SimplifiedChinese,
	} {
		if got, err := Parse(tag); err != nil || got != want {
			t.Errorf("Parse(%q): got %q, %v; want %q", tag, got, err, want)
		}
	}
	for _, tag := range []string{"fr", "zh-Hant", "english", "en\n"} {
		if _, err := Parse(tag); !errors.Is(err, ErrUnknownLanguage) || !strings.Contains(err.Error(), "zh-Hans") {
			t.Errorf("Parse(%q): got %v, want ErrUnknownLanguage listing the languages", tag, err)
		}
	}
}
