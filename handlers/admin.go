package handlers

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// actor names who did an admin action, for the audit trail.
func actor(c *gin.Context) string { return info(c).keyID }

// auditLog writes an audit line for a key change (the audit table holds
// the same); it names keys by id and display prefix, never by secret.
func (s *server) auditLog(c *gin.Context, action string, key auth.Key, attrs ...any) {
	attrs = append([]any{"request_id", info(c).id, "actor", actor(c), "action", action, "key_id", key.ID, "prefix", key.Prefix}, attrs...)
	s.log.Info("audit", attrs...)
}

func (s *server) createKey() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body createKeyRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		spec, err := body.spec(s.now())
		if err == nil {
			err = s.checkPlan(spec.Plan)
		}
		if err != nil {
			s.fail(c, err)
			return
		}
		key, secret, err := s.keys.Create(c.Request.Context(), actor(c), spec)
		if err != nil {
			s.fail(c, keyError(err))
			return
		}
		s.auditLog(c, auth.ActionCreate, key, "scopes", auth.JoinScopes(key.Scopes))
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusCreated, createdKey{Key: secret, WebhookSecret: s.newWebhookSecret(c, key.ID), Notice: shownOnce, Info: key})
	}
}

func (s *server) listKeys() gin.HandlerFunc {
	return func(c *gin.Context) {
		keys, err := s.keys.List(c.Request.Context())
		if err != nil {
			s.fail(c, err)
			return
		}
		if keys == nil {
			keys = []auth.Key{}
		}
		c.JSON(http.StatusOK, keyList{Keys: keys})
	}
}

func (s *server) showKey() gin.HandlerFunc {
	return func(c *gin.Context) {
		key, err := s.keys.Get(c.Request.Context(), c.Param("id"))
		if err != nil {
			s.fail(c, keyError(err))
			return
		}
		c.JSON(http.StatusOK, key)
	}
}

func (s *server) updateKey() gin.HandlerFunc {
	return func(c *gin.Context) {
		var body updateKeyRequest
		if err := decodeJSON(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		patch := auth.Patch{Name: body.Name, Models: body.Models, Plan: body.Plan, Account: body.AccountID, Limits: body.Limits, ExpiresAt: body.ExpiresAt}
		if body.Scopes != nil {
			scopes, err := scopesOf(*body.Scopes)
			if err != nil {
				s.fail(c, err)
				return
			}
			patch.Scopes = &scopes
		}
		if body.Plan != nil {
			if err := s.checkPlan(*body.Plan); err != nil {
				s.fail(c, err)
				return
			}
		}
		key, err := s.keys.Update(c.Request.Context(), actor(c), c.Param("id"), patch)
		if err != nil {
			s.fail(c, keyError(err))
			return
		}
		s.auditLog(c, auth.ActionUpdate, key)
		c.JSON(http.StatusOK, key)
	}
}

func (s *server) revokeKey() gin.HandlerFunc {
	return func(c *gin.Context) {
		key, err := s.keys.Revoke(c.Request.Context(), actor(c), c.Param("id"))
		if err != nil {
			s.fail(c, keyError(err))
			return
		}
		s.auditLog(c, auth.ActionRevoke, key)
		c.JSON(http.StatusOK, key)
	}
}

// rotateKey serves both the admin route (any key, any grace) and the
// self-service one (the caller's own key, grace capped, and only with the
// key's current secret: a superseded one, leaked and the reason for the
// rotation, would otherwise mint itself a fresh secret and, with grace 0,
// end the owner's). Whether the secret is current is the store's answer,
// inside the rotation's transaction, never this instance's cache, which may
// not have seen a rotation made on another instance.
func (s *server) rotateKey(self bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		var body rotateRequest
		if err := decodeOptional(c, &body); err != nil {
			s.fail(c, err)
			return
		}
		id, limit := c.Param("id"), time.Duration(0)
		if self {
			id, limit = info(c).keyID, MaxSelfRotateGrace
		}
		grace, err := parseGrace(body.Grace, limit)
		if err != nil {
			s.fail(c, err)
			return
		}
		var (
			key               auth.Key
			secret, presented string
		)
		switch {
		case self && info(c).session != nil:
			presented = info(c).session.SecretHash[:8] // for the log line below: never the secret
			key, secret, err = s.keys.RotateSelfHash(c.Request.Context(), id, info(c).session.SecretHash, grace)
		case self:
			presented, _ = presentedKey(c.Request) // the secret authenticate admitted
			key, secret, err = s.keys.RotateSelf(c.Request.Context(), id, presented, grace)
		default:
			key, secret, err = s.keys.Rotate(c.Request.Context(), actor(c), id, grace)
		}
		if err != nil {
			if errors.Is(err, auth.ErrSuperseded) {
				// Someone is using a secret that a rotation replaced: most
				// likely the leak the rotation was for.
				s.log.Warn("refused self-rotation: the secret is no longer the key's current one",
					"request_id", info(c).id, "key_id", id, "prefix", auth.DisplayPrefix(presented), "client", c.ClientIP())
			}
			s.fail(c, keyError(err))
			return
		}
		s.auditLog(c, auth.ActionRotate, key, "grace", grace.String())
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, createdKey{Key: secret, Notice: shownOnce + "; the secret it replaces keeps working for " + grace.String() +
			", any older one has stopped", Info: key})
	}
}

type auditList struct {
	Entries []auth.AuditEntry `json:"entries"`
}

func (s *server) listAudit() gin.HandlerFunc {
	return func(c *gin.Context) {
		entries, err := s.audit.Audit(c.Request.Context(), c.Query("key_id"))
		if err != nil {
			s.fail(c, err)
			return
		}
		if entries == nil {
			entries = []auth.AuditEntry{}
		}
		c.JSON(http.StatusOK, auditList{Entries: entries})
	}
}
