package handlers

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"tollgate"
	"tollgate/auth"
)

// AccountManager creates and changes subscriber accounts; *auth.Accounts
// satisfies it.
type AccountManager interface {
	Create(ctx context.Context, actor string, spec auth.AccountSpec) (auth.Account, error)
	List(ctx context.Context) ([]auth.Account, error)
	Get(ctx context.Context, id string) (auth.Account, error)
	Update(ctx context.Context, actor, id string, patch auth.AccountPatch) (auth.Account, error)
}

type accountList struct {
	Accounts []auth.Account `json:"accounts"`
}

type createAccountRequest struct {
	Name             string      `json:"name"`
	StripeCustomerID string      `json:"stripe_customer_id"`
	Plan             string      `json:"plan"`
	Limits           auth.Limits `json:"limits"`
}

type updateAccountRequest struct {
	Name             *string      `json:"name"`
	StripeCustomerID *string      `json:"stripe_customer_id"`
	Plan             *string      `json:"plan"`
	Limits           *auth.Limits `json:"limits"`
}

// accountError maps the auth package's account errors.
func accountError(err error) error {
	if errors.Is(err, auth.ErrAccountNotFound) {
		return tollgate.Errorf(tollgate.CodeAccountNotFound, "no account with that id")
	}
	return keyError(err)
}

// accountsOn answers 404 when the server has no account manager.
func (s *server) accountsOn(c *gin.Context) bool {
	if s.accounts == nil {
		s.fail(c, tollgate.Errorf(tollgate.CodeNotFound, "accounts are not enabled on this server"))
		return false
	}
	return true
}

func (s *server) auditAccount(c *gin.Context, action string, a auth.Account) {
	s.log.Info("audit", "request_id", info(c).id, "actor", actor(c), "action", action, "account_id", a.ID)
}

func (s *server) createAccount() gin.HandlerFunc {
	return func(c *gin.Context) {
		if !s.accountsOn(c) {
			return
		}
		var body createAccountRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		if err := s.checkPlan(body.Plan); err != nil {
			s.fail(c, err)
			return
		}
		a, err := s.accounts.Create(c.Request.Context(), actor(c), auth.AccountSpec{Name: body.Name,
			StripeCustomerID: body.StripeCustomerID, Plan: body.Plan, Limits: body.Limits})
		if err != nil {
			s.fail(c, accountError(err))
			return
		}
		s.auditAccount(c, auth.ActionAccountCreate, a)
		c.JSON(http.StatusCreated, a)
	}
}

func (s *server) listAccounts() gin.HandlerFunc {
	return func(c *gin.Context) {
		if !s.accountsOn(c) {
			return
		}
		list, err := s.accounts.List(c.Request.Context())
		if err != nil {
			s.fail(c, err)
			return
		}
		if list == nil {
			list = []auth.Account{}
		}
		c.JSON(http.StatusOK, accountList{Accounts: list})
	}
}

func (s *server) showAccount() gin.HandlerFunc {
	return func(c *gin.Context) {
		if !s.accountsOn(c) {
			return
		}
		a, err := s.accounts.Get(c.Request.Context(), c.Param("id"))
		if err != nil {
			s.fail(c, accountError(err))
			return
		}
		c.JSON(http.StatusOK, a)
	}
}

func (s *server) updateAccount() gin.HandlerFunc {
	return func(c *gin.Context) {
		if !s.accountsOn(c) {
			return
		}
		var body updateAccountRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		if body.Plan != nil {
			if err := s.checkPlan(*body.Plan); err != nil {
				s.fail(c, err)
				return
			}
		}
		a, err := s.accounts.Update(c.Request.Context(), actor(c), c.Param("id"), auth.AccountPatch{Name: body.Name,
			StripeCustomerID: body.StripeCustomerID, Plan: body.Plan, Limits: body.Limits})
		if err != nil {
			s.fail(c, accountError(err))
			return
		}
		s.auditAccount(c, auth.ActionAccountUpdate, a)
		c.JSON(http.StatusOK, a)
	}
}
