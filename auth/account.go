package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Account is a subscriber: it owns keys (Key.AccountID) and has monthly
// quotas of its own, shared by all its keys, on top of each key's limits.
// Only the monthly fields of Limits (monthly_tokens, monthly_requests,
// monthly_budget) apply to an account; its plan supplies those it leaves
// unset.
type Account struct {
	ID               string    `json:"id"`   // "acct_" + 16 base62
	Name             string    `json:"name"` // 1..100 characters
	StripeCustomerID string    `json:"stripe_customer_id,omitempty"`
	Plan             string    `json:"plan,omitempty"`
	Limits           Limits    `json:"limits,omitzero"`
	CreatedAt        time.Time `json:"created_at"`
}

// Account audit actions. Their AuditEntry.KeyID holds the account's id.
const (
	ActionAccountCreate = "account.create"
	ActionAccountUpdate = "account.update"
)

// ErrAccountNotFound: no account has the given id.
var ErrAccountNotFound = errors.New("auth: account not found")

// AccountStore persists accounts. Every change also writes its AuditEntry
// in the same transaction. Implementations must be safe for concurrent use.
type AccountStore interface {
	// CreateAccount stores a new account.
	CreateAccount(ctx context.Context, a Account, e AuditEntry) error
	// ListAccounts returns every account, oldest first.
	ListAccounts(ctx context.Context) ([]Account, error)
	// AccountByID returns one account, or ErrAccountNotFound.
	AccountByID(ctx context.Context, id string) (Account, error)
	// UpdateAccount loads the account, calls apply on it and, if apply
	// returns nil, stores its Name, StripeCustomerID, Plan and Limits and
	// returns the stored account (ErrAccountNotFound if there is none).
	UpdateAccount(ctx context.Context, id string, apply func(*Account) error, e AuditEntry) (Account, error)
}

// AccountSpec describes an account to create.
type AccountSpec struct {
	Name             string
	StripeCustomerID string
	Plan             string
	Limits           Limits
}

// AccountPatch changes some fields of an account; nil fields are left alone.
type AccountPatch struct {
	Name             *string
	StripeCustomerID *string
	Plan             *string
	Limits           *Limits
}

// MaxStripeCustomerLen bounds a Stripe customer id ("cus_..." ids are far shorter).
const MaxStripeCustomerLen = 255

// apply validates the set fields of p and writes them into a.
func (p AccountPatch) apply(a *Account) error {
	if err := setText(&a.Name, p.Name, "name", MaxNameLen, true); err != nil {
		return err
	}
	if p.StripeCustomerID != nil {
		s := strings.TrimSpace(*p.StripeCustomerID)
		if err := checkText("stripe_customer_id", s, MaxStripeCustomerLen, false); err != nil {
			return err
		}
		if strings.ContainsAny(s, " \t") || !utf8.ValidString(s) {
			return fieldErr("stripe_customer_id", "must not contain spaces")
		}
		a.StripeCustomerID = s
	}
	if err := setText(&a.Plan, p.Plan, "plan", MaxPlanLen, false); err != nil {
		return err
	}
	if p.Limits != nil {
		l := *p.Limits
		if l.RequestsPerSecond != 0 || l.Burst != 0 || l.TokensPerMinute != 0 || l.MaxConcurrent != 0 {
			return fieldErr("limits", "an account takes only monthly limits (monthly_tokens, monthly_requests, monthly_budget); set rates on its keys or plan")
		}
		if err := validateLimits(l); err != nil {
			return err
		}
		a.Limits = l
	}
	return nil
}

func (p AccountPatch) fields() []string {
	var f []string
	for _, x := range []struct {
		set  bool
		name string
	}{{p.Name != nil, "name"}, {p.StripeCustomerID != nil, "stripe_customer_id"}, {p.Plan != nil, "plan"}, {p.Limits != nil, "limits"}} {
		if x.set {
			f = append(f, x.name)
		}
	}
	return f
}

// Accounts manages accounts: every change is validated and stored with an
// audit entry. Safe for concurrent use if its store is.
type Accounts struct {
	store AccountStore
	now   func() time.Time
	cache *AccountCache // told about changes; may be nil
}

// NewAccounts returns a manager over store; now nil means time.Now. cache,
// if not nil, forgets an account as soon as it is changed here.
func NewAccounts(store AccountStore, cache *AccountCache, now func() time.Time) *Accounts {
	if now == nil {
		now = time.Now
	}
	return &Accounts{store: store, now: now, cache: cache}
}

// Create validates spec and stores a new account.
func (m *Accounts) Create(ctx context.Context, actor string, spec AccountSpec) (Account, error) {
	if err := checkActor(actor); err != nil {
		return Account{}, err
	}
	now := m.now().UTC()
	a := Account{CreatedAt: now}
	p := AccountPatch{Name: &spec.Name, StripeCustomerID: &spec.StripeCustomerID, Plan: &spec.Plan, Limits: &spec.Limits}
	if err := p.apply(&a); err != nil {
		return Account{}, err
	}
	id, err := newIDWith(accountIDPrefix)
	if err != nil {
		return Account{}, err
	}
	a.ID = id
	detail := fmt.Sprintf("name=%q plan=%q stripe_customer_id=%q", a.Name, a.Plan, a.StripeCustomerID)
	if err := m.store.CreateAccount(ctx, a, AuditEntry{Time: now, Actor: actor, Action: ActionAccountCreate, KeyID: a.ID, Detail: detail}); err != nil {
		return Account{}, err
	}
	return a, nil
}

// List returns every account, oldest first.
func (m *Accounts) List(ctx context.Context) ([]Account, error) { return m.store.ListAccounts(ctx) }

// Get returns one account, or ErrAccountNotFound.
func (m *Accounts) Get(ctx context.Context, id string) (Account, error) {
	return m.store.AccountByID(ctx, id)
}

// Update applies patch to account id (a *FieldError if invalid,
// ErrAccountNotFound if there is none) and returns the stored account.
func (m *Accounts) Update(ctx context.Context, actor, id string, patch AccountPatch) (Account, error) {
	if err := checkActor(actor); err != nil {
		return Account{}, err
	}
	now := m.now().UTC()
	e := AuditEntry{Time: now, Actor: actor, Action: ActionAccountUpdate, KeyID: id, Detail: "fields=" + strings.Join(patch.fields(), ",")}
	a, err := m.store.UpdateAccount(ctx, id, patch.apply, e)
	if m.cache != nil {
		m.cache.Forget(id)
	}
	return a, err
}

// accountIDPrefix starts every account id.
const accountIDPrefix = "acct_"

// AccountCacheTTL is how long an AccountCache trusts what it read: a change
// made on another replica takes effect there within it.
const AccountCacheTTL = 2 * time.Second

// AccountCache reads accounts through a store, keeping each for
// AccountCacheTTL, so admission does not query the database per request.
// Safe for concurrent use.
type AccountCache struct {
	store AccountStore
	now   func() time.Time

	mu sync.Mutex
	m  map[string]cachedAccount
}

type cachedAccount struct {
	a  Account
	at time.Time
}

// NewAccountCache returns a cache over store; now nil means time.Now.
func NewAccountCache(store AccountStore, now func() time.Time) *AccountCache {
	if now == nil {
		now = time.Now
	}
	return &AccountCache{store: store, now: now, m: make(map[string]cachedAccount)}
}

// Account returns account id, from the cache when it is fresh.
func (c *AccountCache) Account(ctx context.Context, id string) (Account, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < AccountCacheTTL && !now.Before(e.at) {
		return e.a, nil
	}
	a, err := c.store.AccountByID(ctx, id)
	if err != nil {
		return Account{}, err
	}
	c.mu.Lock()
	if len(c.m) > 100_000 {
		clear(c.m)
	}
	c.m[id] = cachedAccount{a: a, at: now}
	c.mu.Unlock()
	return a, nil
}

// Forget drops account id from the cache.
func (c *AccountCache) Forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}
