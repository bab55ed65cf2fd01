package handlers

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"tollgate/auth"
	"tollgate/inference"
	"tollgate/jobs"
	"tollgate/metering"
)

// TestOpenAPISchemasMatchTypes: each schema in openapi.json has exactly the
// JSON fields of the Go type it describes, so a field added to a request or
// response type must be documented too.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]schemaDoc `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	schemas := doc.Components.Schemas
	types := map[string]any{
		"Error":                errorBody{},
		"ErrorDetail":          errorDetail{},
		"Usage":                usageJSON{},
		"Message":              inference.Message{},
		"GenerateRequest":      generateRequest{},
		"GenerateResponse":     generateResponse{},
		"StreamChunk":          streamChunk{},
		"StreamDone":           streamDone{},
		"EmbedRequest":         embedRequest{},
		"EmbedResponse":        embedResponse{},
		"PredictRequest":       predictRequest{},
		"PredictOne":           predictOne{},
		"PredictMany":          predictMany{},
		"Prediction":           prediction{},
		"ModelsResponse":       modelsResponse{},
		"Model":                modelJSON{},
		"Price":                priceJSON{},
		"Task":                 taskJSON{},
		"Totals":               totalsJSON{},
		"UsageGroup":           groupJSON{},
		"Quota":                quotaJSON{},
		"UsageReport":          usageResponse{},
		"Limits":               auth.Limits{},
		"Key":                  auth.Key{},
		"Account":              auth.Account{},
		"AccountList":          accountList{},
		"CreateAccountRequest": createAccountRequest{},
		"UpdateAccountRequest": updateAccountRequest{},
		"AccountUsage":         accountUsageJSON{},
		"CreatedKey":           createdKey{},
		"KeyList":              keyList{},
		"CreateKeyRequest":     createKeyRequest{},
		"UpdateKeyRequest":     updateKeyRequest{},
		"RotateRequest":        rotateRequest{},
		"AuditEntry":           auth.AuditEntry{},
		"AuditList":            auditList{},
		"Ready":                readyResponse{},
		"MissingModel":         missingModelJSON{},
		"ReadyBackend":         readyBackend{},
		"BackendList":          backendList{},
		"Backend":              backendJSON{},
		"LoadedModel":          loadedModelJSON{},
		"Reloaded":             reloaded{},
		"Root":                 rootResponse{},
		// The dashboard.
		"SignInRequest": signInRequest{},
		"Session":       sessionJSON{},
		"UsageRecord":   usageRecord{},
		"UsageRecords":  usageRecords{},
		"InFlight":      inFlightJSON{},
		// Billing.
		"Billing":       billingJSON{},
		"BillingMeters": billingMetersJSON{},
		"BillingCursor": billingCursorJSON{},
		// Async jobs.
		"CreateJobRequest": createJobRequest{},
		"JobAccepted":      jobAccepted{},
		"WebhookSecret":    webhookSecret{},
		"Job":              jobs.View{},
		"JobError":         jobs.ErrorInfo{},
		"JobDelivery":      jobs.DeliveryView{},
		"JobAttempt":       jobs.Attempt{},
		// The OpenAI-compatible surface.
		"OpenAIError":             openAIErrorBody{},
		"OpenAIErrorDetail":       openAIErrorDetail{},
		"OpenAIUsage":             oaUsage{},
		"OpenAIChatRequest":       oaChatRequest{},
		"OpenAIChatCompletion":    oaChatCompletion{},
		"OpenAICompletionRequest": oaCompletionRequest{},
		"OpenAICompletion":        oaCompletion{},
		"OpenAIEmbeddingRequest":  oaEmbeddingRequest{},
		"OpenAIEmbeddingList":     oaEmbeddingList{},
		"OpenAIModel":             oaModel{},
		"OpenAIModelList":         oaModelList{},
	}
	for name, v := range types {
		s, ok := schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s", name)
			continue
		}
		got, want := s.fields(schemas), jsonFields(reflect.TypeOf(v))
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("schema %s has fields %v; %T has %v", name, got, v, want)
		}
	}

	// The export is one record per request in metering.ExportColumns order.
	export := schemas["ExportRecord"]
	if got := export.fields(schemas); !slices.Equal(got, metering.ExportColumns) {
		t.Errorf("schema ExportRecord has fields %v, want %v", got, metering.ExportColumns)
	}

	// Options: exactly what inference.CheckOptions accepts.
	_, err := inference.CheckOptions(map[string]any{"no_such_option": 1})
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	_, list, ok := strings.Cut(msg, "allowed: ")
	if !ok {
		t.Fatalf("CheckOptions of an unknown option: %q, want a list of the allowed ones", msg)
	}
	allowed := strings.Split(strings.TrimSuffix(list, ")"), ", ")
	documented := schemas["Options"].fields(schemas)
	slices.Sort(allowed)
	slices.Sort(documented)
	if !slices.Equal(documented, allowed) {
		t.Errorf("schema Options has %v; inference accepts %v", documented, allowed)
	}
}

// schemaDoc is the part of a schema these tests read. Properties keep the
// document's order (ExportRecord's must follow the CSV columns).
type schemaDoc struct {
	Ref        string      `json:"$ref"`
	Properties orderedKeys `json:"properties"`
	AllOf      []schemaDoc `json:"allOf"`
}

// orderedKeys decodes a JSON object into its keys, in order.
type orderedKeys []string

func (o *orderedKeys) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		*o = append(*o, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// fields lists the schema's properties, following allOf and $ref.
func (s schemaDoc) fields(all map[string]schemaDoc) []string {
	if s.Ref != "" {
		return all[strings.TrimPrefix(s.Ref, "#/components/schemas/")].fields(all)
	}
	out := slices.Clone([]string(s.Properties))
	for _, part := range s.AllOf {
		out = append(out, part.fields(all)...)
	}
	return out
}

// jsonFields lists the JSON names encoding/json uses for t's fields,
// including those of embedded structs.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}
