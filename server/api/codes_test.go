package api

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestErrorCodesListed: every error code the API's code can answer is in
// ErrorCodes and in the README's table of codes, and every listed code is
// one the code answers (the clients' catalogs and the README rely on it).
func TestErrorCodesListed(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?:errorf\(|apiError\{(?:status: )?|writeError\(w, )http\.Status[A-Za-z]+, (?:code: )?"([a-z_]+)"`)
	used := map[string]bool{"rate_limited": true, "bad_json": true} // also set outside those calls (ratelimit, jsonstrict.DuplicateKeys)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for code := range used {
		if !slices.Contains(ErrorCodes, code) {
			t.Errorf("the API answers %q, which ErrorCodes does not list", code)
		}
		if !regexp.MustCompile("(?m)^\\| [0-9]{3} \\| `" + code + "` \\|").Match(readme) {
			t.Errorf("the README's table of error codes lacks %q", code)
		}
	}
	for _, code := range ErrorCodes {
		if !used[code] {
			t.Errorf("ErrorCodes lists %q, which the API never answers", code)
		}
	}
}
