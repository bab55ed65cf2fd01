package inference

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ollama/ollama/auth"
)

// signer signs requests as Ollama's api.Client does when OLLAMA_AUTH is set
// (Ollama v0.10.1, api.Client.do and stream): a "ts" query parameter with
// the Unix time, and an Authorization header that auth.Sign makes from
// "METHOD,PATH?ts=TS" with the key in ~/.ollama/id_ed25519. PATH is the
// API path ("/api/chat"), without the backend URL's own path prefix.
//
// Doing it here rather than leaving it to api.Client means the caller's
// choice (WithAuth) holds for every request, the pooled streaming path
// included, whatever OLLAMA_AUTH says in this process's environment. A
// request api.Client has signed already (it reads OLLAMA_AUTH itself) is
// passed on as it is.
type signer struct {
	rt     http.RoundTripper
	prefix string // the backend URL's path, "" or "/ollama"
}

func (s signer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") != "" {
		return s.rt.RoundTrip(r)
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	path := strings.TrimPrefix(r.URL.Path, s.prefix)
	token, err := auth.Sign(r.Context(), []byte(r.Method+","+path+"?ts="+now))
	if err != nil {
		if r.Body != nil {
			r.Body.Close() // a RoundTripper must close the body, even on error
		}
		return nil, &SignError{Err: err}
	}
	r = r.Clone(r.Context())
	q := r.URL.Query()
	q.Set("ts", now)
	r.URL.RawQuery = q.Encode()
	r.Header.Set("Authorization", token)
	return s.rt.RoundTrip(r)
}
