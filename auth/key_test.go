package auth

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestParseScopes(t *testing.T) {
	got, err := ParseScopes(" generate, admin,generate,,")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Scope{ScopeGenerate, ScopeAdmin}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseScopes = %v, want %v", got, want)
	}
	if got, err := ParseScopes(""); err != nil || len(got) != 0 {
		t.Fatalf("ParseScopes(\"\") = %v, %v", got, err)
	}
	_, err = ParseScopes("generate,root")
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "scopes" || !errors.Is(err, ErrInvalid) {
		t.Fatalf("ParseScopes(root) = %v, want scopes FieldError", err)
	}
	if JoinScopes(AllScopes()) != "generate,embed,predict,admin" {
		t.Fatal(JoinScopes(AllScopes()))
	}
}

func TestKeyPermissions(t *testing.T) {
	k := Key{Scopes: []Scope{ScopeEmbed}, Models: []string{"nomic"}}
	if !k.HasScope(ScopeEmbed) || k.HasScope(ScopeGenerate) || k.HasScope(ScopeAdmin) {
		t.Fatal("HasScope wrong")
	}
	if !k.AllowsModel("nomic") || k.AllowsModel("llama3.2") {
		t.Fatal("AllowsModel wrong")
	}
	if !(Key{}).AllowsModel("anything") {
		t.Fatal("empty model list must allow every model")
	}
	admin := Key{Scopes: []Scope{ScopeAdmin}}
	if admin.HasScope(ScopeGenerate) {
		t.Fatal("admin must not imply generate")
	}
}

func TestKeyUsable(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		k    Key
		want error
	}{
		{Key{}, nil},
		{Key{ExpiresAt: now.Add(time.Nanosecond)}, nil},
		{Key{ExpiresAt: now}, ErrExpired},
		{Key{RevokedAt: now.Add(-time.Hour)}, ErrRevoked},
		{Key{RevokedAt: now, ExpiresAt: now}, ErrRevoked},
	}
	for i, c := range cases {
		if err := c.k.Usable(now); err != c.want {
			t.Errorf("case %d: Usable = %v, want %v", i, err, c.want)
		}
	}
}
