package handlers_test

import (
	"net/http"
	"testing"
)

// A secret that a rotation superseded (working only for its grace period)
// must not be able to rotate the key again: that would hand whoever leaked
// it a fresh, non-expiring secret, and with grace 0 cut off the secret the
// owner just rotated to.
func TestReviewSupersededSecretCannotSelfRotate(t *testing.T) {
	_, ts := newFakeServer(t, "2s")
	old := ts.key
	var first struct {
		Key string `json:"key"`
	}
	ts.doJSON(t, "POST", "/keys/self/rotate", map[string]string{"grace": "1h"}, http.StatusOK, &first)

	// The old secret still works during its grace period...
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil, "X-API-Key", old)
	// ...but may not mint a new secret.
	ts.doError(t, "POST", "/keys/self/rotate", map[string]string{"grace": "0s"}, http.StatusForbidden, "superseded_key", nil, "X-API-Key", old)
	// And the owner's new secret keeps working.
	ts.doJSON(t, "GET", "/models", nil, http.StatusOK, nil, "X-API-Key", first.Key)
}
