package gateway_test

import (
	"testing"

	"tollgate"
)

// Models reports each model as the key's calls get it: with its plan's caps
// (the small plan's max_num_predict of 5, not the model's 64), only the
// models the key may use, and plan_not_found for a plan that has left the
// catalog, as a call would.
func TestModelsAreRestrictedToThePlan(t *testing.T) {
	e := newEnv(t)
	k := key("k1", tollgate.Limits{})
	k.Plan = "small"
	models, tasks, err := e.gw.Models(k)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, m := range models {
		got[m.Name] = m.Limits.MaxNumPredict
	}
	if got["chat"] != 5 || got["other"] != 5 || len(got) != 3 {
		t.Errorf("max_num_predict per model %v, want 5 for chat and other (the small plan's)", got)
	}
	if len(tasks) != 1 {
		t.Errorf("tasks %v", tasks)
	}

	k.Plan, k.Models = "", []string{"embedder"}
	models, tasks, _ = e.gw.Models(k)
	if len(models) != 1 || models[0].Name != "embedder" || len(tasks) != 0 {
		t.Errorf("a key for embedder only sees %v and tasks %v", models, tasks)
	}

	k.Plan, k.Models = "gone", nil
	_, _, err = e.gw.Models(k)
	checkCode(t, err, tollgate.CodePlanNotFound)
}
