package broker

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Device broker passwords are random per registration (NewPassword) and
// kept only as a hash, in Mosquitto's password-file format
// ("$7$ITERATIONS$SALT$HASH": PBKDF2-SHA512, 12-byte salt, 64-byte hash,
// base64): the embedded broker checks them from the ledger, and the same
// lines make a Mosquitto password_file (farego-settlement mqtt-passwd).

// hashIterations is Mosquitto's default for "$7$" hashes. The passwords are
// 256 random bits, so the work factor adds nothing to their strength.
const hashIterations = 101

// NewPassword returns a new random device password: 64 hex digits.
func NewPassword() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// HashPassword returns password's hash in Mosquitto's "$7$" format.
func HashPassword(password string) string {
	salt := make([]byte, 12)
	rand.Read(salt)
	return formatHash(hashIterations, salt, pbkdf2Key(password, salt, hashIterations))
}

func pbkdf2Key(password string, salt []byte, iter int) []byte {
	k, err := pbkdf2.Key(sha512.New, password, salt, iter, sha512.Size)
	if err != nil {
		panic(err) // only for FIPS-140-only mode or absurd lengths, neither of which applies
	}
	return k
}

func formatHash(iter int, salt, key []byte) string {
	return "$7$" + strconv.Itoa(iter) + "$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(key)
}

// errBadHash is a stored hash that is not in the "$7$" format.
var errBadHash = errors.New("broker: password hash is not in Mosquitto's $7$ format")

// CheckPassword reports whether password matches hash (constant time).
func CheckPassword(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "7" {
		return false, errBadHash
	}
	iter, err := strconv.Atoi(parts[2])
	if err != nil || iter < 1 || iter > 1_000_000 {
		return false, fmt.Errorf("%w: iterations %q", errBadHash, parts[2])
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[3])
	want, err2 := base64.StdEncoding.DecodeString(parts[4])
	if err1 != nil || err2 != nil || len(salt) == 0 || len(want) != sha512.Size {
		return false, errBadHash
	}
	return hmac.Equal(pbkdf2Key(password, salt, iter), want), nil
}
