package handlers

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"tollgate"
)

// FuzzDecodeForm: decodeFormBytes never panics and refuses with a 400 that
// says something; a URL-encoded form it accepts decodes to the same request
// when re-encoded canonically (the order and escaping of fields do not
// matter). The seeds run in every go test; go test -fuzz=FuzzDecodeForm
// explores further.
func FuzzDecodeForm(f *testing.F) {
	const boundary = "XyZ"
	mp := func(parts ...string) string {
		s := ""
		for i := 0; i < len(parts); i += 2 {
			s += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + parts[i] + "\"\r\n\r\n" + parts[i+1] + "\r\n"
		}
		return s + "--" + boundary + "--\r\n"
	}
	for _, seed := range []struct {
		body      string
		multipart bool
		predict   bool
	}{
		{"model=chat&prompt=hi", false, false},
		{"model=chat&prompt=hi&stream=false&temperature=0.2&options.num_predict=20&keep_alive=300", false, false},
		{"model=chat&messages=%5B%7B%22role%22%3A%22user%22%2C%22content%22%3A%22hi%22%7D%5D&format=json", false, false},
		{"model=chat&prompt=hi&format=%7B%22type%22%3A%22object%22%7D", false, false},
		{"model=chat&prompt=hi&options=%7B%22temperature%22%3A1%7D", false, false},
		{"model=chat&prompt=hi&options=%7B%22temperature%22%3A1%7D&top_k=2", false, false},
		{"model=chat&promt=hi", false, false},
		{"prompt=a&prompt=b", false, false},
		{"temperature=abc", false, false},
		{"options.stop=a&options.stop=b&prompt=x", false, false},
		{"stream=maybe", false, false},
		{"messages=%5B", false, false},
		{"%zz", false, false},
		{"a;b", false, false},
		{"=&&=", false, false},
		{"prompt=%FF", false, false},
		{"", false, false},
		{"labels=bug,feature&input=x", false, true},
		{"labels=bug&labels=feature&input=a&input=b&task=t", false, true},
		{"labels=&input=", false, true},
		{mp("model", "chat", "prompt", "hi", "temperature", "0.2"), true, false},
		{mp("labels", "a,b", "input", "x", "input", "y"), true, true},
		{mp("", "x"), true, false},
		{"--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nunterminated", true, false},
		{"--XyZ--", true, false},
	} {
		f.Add([]byte(seed.body), seed.multipart, seed.predict)
	}
	f.Fuzz(func(t *testing.T, body []byte, multipart, predict bool) {
		ct := formURLEncoded
		if multipart {
			ct = formMultipart + "; boundary=" + boundary
		}
		decode := func(body []byte) (any, error) {
			if predict {
				var req predictRequest
				return req, decodeFormBytes(body, ct, &req)
			}
			var req generateRequest
			return req, decodeFormBytes(body, ct, &req)
		}
		got, err := decode(body)
		if err != nil {
			ae, ok := err.(*tollgate.Error)
			if !ok {
				t.Fatalf("error %T %v, want *tollgate.Error", err, err)
			}
			if ae.Code.Status() != http.StatusBadRequest || ae.Code != tollgate.CodeInvalidRequest || ae.Message == "" {
				t.Fatalf("error %+v, want a 400 invalid_request with a message", ae)
			}
			return
		}
		if multipart {
			return
		}
		values, err := url.ParseQuery(string(body))
		if err != nil {
			t.Fatalf("accepted %q, which url.ParseQuery refuses: %v", body, err)
		}
		again, err := decode([]byte(values.Encode()))
		if err != nil {
			t.Fatalf("accepted %q but not its canonical form %q: %v", body, values.Encode(), err)
		}
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("%q decoded to %+v, its canonical form to %+v", body, got, again)
		}
	})
}
