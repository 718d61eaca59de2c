package ridertext

import (
	"fmt"
	"slices"
	"strings"
)

// Language is a catalog language, as a BCP 47 tag.
type Language string

// The languages of the catalog.
const (
	// English is the default.
	English Language = "en"
	// SimplifiedChinese is Mandarin in simplified characters.
	SimplifiedChinese Language = "zh-Hans"
)

// Keys that are not refusal reasons.
const (
	// KeyPaid is the text shown with an accepted, charged tap.
	KeyPaid = "paid"
	// KeyNotAccepted is the text for a reason the catalog does not know.
	KeyNotAccepted = "not_accepted"
)

// catalog holds every text, by language and key. English is complete by
// definition; the tests check every other language has the same keys.
var catalog = map[Language]map[string]string{
	English: {
		"malformed":                "Code not readable - try again",
		"unsupported_version":      "Please update your app",
		"unknown_issuer_key":       "Code not valid here",
		"bad_credential_signature": "Invalid code",
		"credential_not_yet_valid": "Code not valid yet",
		"credential_expired":       "Open your app online to renew",
		"bad_code_signature":       "Invalid code",
		"code_from_future":         "Check your phone's clock",
		"code_expired":             "Code expired - refresh it",
		"denied":                   "Account blocked - see your app",
		"duplicate":                "Already paid",
		"code_used":                "Code used - show a new one",
		"passback":                 "Already used - please wait",
		// The bus has not synced: the rider's phone being online helps
		// nothing (it said "go online" to riders whose phones were).
		"risk_cap":           "Bus offline: ride limit reached",
		"no_fare":            "Out of service: fares",
		"queue_full":         "Out of service",
		"clock":              "Out of service: clock",
		"clock_offset":       "Out of service: clock",
		"queue_damaged":      "Out of service",
		"route_not_in_fares": "Out of service: route",
		"no_valid_key":       "Out of service: keys",
		"internal":           "Out of service",
		KeyPaid:              "Paid",
		KeyNotAccepted:       "Not accepted",
	},
	SimplifiedChinese: {
		"malformed":                "无法识别二维码，请重试",
		"unsupported_version":      "请更新您的应用",
		"unknown_issuer_key":       "此码在本车不可用",
		"bad_credential_signature": "无效乘车码",
		"credential_not_yet_valid": "乘车码尚未生效",
		"credential_expired":       "请联网打开应用更新",
		"bad_code_signature":       "无效乘车码",
		"code_from_future":         "请检查手机时间",
		"code_expired":             "乘车码已过期，请刷新",
		"denied":                   "账户已冻结，请查看应用",
		"duplicate":                "已支付",
		"code_used":                "此码已使用，请刷新",
		"passback":                 "刚刚已使用，请稍候",
		"risk_cap":                 "本车离线，乘车次数已达上限",
		"no_fare":                  "暂停服务：票价",
		"queue_full":               "暂停服务",
		"clock":                    "暂停服务：时钟",
		"clock_offset":             "暂停服务：时钟",
		"queue_damaged":            "暂停服务",
		"route_not_in_fares":       "暂停服务：线路",
		"no_valid_key":             "暂停服务：密钥",
		"internal":                 "暂停服务",
		KeyPaid:                    "支付成功",
		KeyNotAccepted:             "未通过",
	},
}

// aliases are the other spellings [Parse] accepts, lower case.
var aliases = map[string]Language{
	"":        English,
	"en":      English,
	"en-us":   English,
	"en-gb":   English,
	"zh":      SimplifiedChinese,
	"zh-hans": SimplifiedChinese,
	"zh-cn":   SimplifiedChinese,
	"zh-sg":   SimplifiedChinese,
}

// Parse returns the language for a tag from a configuration file: "en"
// (also "", "en-US", "en-GB") or "zh-Hans" (also "zh", "zh-CN", "zh-SG"),
// in any case.
func Parse(tag string) (Language, error) {
	if l, ok := aliases[strings.ToLower(tag)]; ok {
		return l, nil
	}
	return "", fmt.Errorf("%w: %q (want one of %s)", ErrUnknownLanguage, tag, strings.Join(tags(), ", "))
}

// Languages returns the catalog's languages, English first.
func Languages() []Language {
	out := []Language{English}
	for l := range catalog {
		if l != English {
			out = append(out, l)
		}
	}
	slices.Sort(out[1:])
	return out
}

func tags() []string {
	var out []string
	for _, l := range Languages() {
		out = append(out, string(l))
	}
	return out
}

// Keys returns every key of the catalog, sorted.
func Keys() []string {
	var out []string
	for k := range catalog[English] {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Has reports whether lang has its own text for key (no fallback).
func Has(lang Language, key string) bool {
	_, ok := catalog[lang][key]
	return ok
}

// Message returns the text for key in lang, falling back to English and
// then to the text for [KeyNotAccepted].
func Message(lang Language, key string) string {
	if m, ok := catalog[lang][key]; ok {
		return m
	}
	if m, ok := catalog[English][key]; ok {
		return m
	}
	if m, ok := catalog[lang][KeyNotAccepted]; ok {
		return m
	}
	return catalog[English][KeyNotAccepted]
}

// Catalog is the catalog in one language: what a display driver holds.
// The zero value speaks English.
type Catalog struct {
	lang Language
}

// For returns the catalog in lang.
func For(lang Language) Catalog { return Catalog{lang: lang} }

// Language returns the catalog's language (English for the zero value).
func (c Catalog) Language() Language {
	if c.lang == "" {
		return English
	}
	return c.lang
}

// Message returns the text for key; see the package function [Message].
func (c Catalog) Message(key string) string { return Message(c.Language(), key) }
