// amosync widget for amoCRM / Kommo: sends the Unisender API key to the amosync backend.
// Every call goes through self.$authorizedAjax, which adds amoCRM's one-time X-Auth-Token JWT;
// the backend verifies it and allows CORS from amoCRM account origins only.
define(['jquery'], function ($) {
  'use strict';

  var BACKEND = '{{PUBLIC_URL}}';

  return function () {
    var self = this;

    function t(key) {
      var parts = key.split('.');
      var node = self.i18n(parts[0]) || {};
      return node[parts[1]] || key;
    }

    function call(path, type, data) {
      return self.$authorizedAjax({
        url: BACKEND + path,
        type: type,
        data: data || {},
        dataType: 'json'
      });
    }

    function errorText(xhr) {
      var body = xhr && xhr.responseJSON;
      return (body && body.error && body.error.message) || (xhr && xhr.statusText) || 'error';
    }

    function showStatus($place) {
      call('/widget/status', 'GET').done(function (status) {
        var text = status.connected
          ? t('status.connected') + (status.list_title || status.list_id)
          : t('status.not_connected');
        if (status.last_sync) {
          text += ' · ' + t('status.last_sync') + status.last_sync.status +
            (status.last_sync.finished_at ? ' (' + status.last_sync.finished_at + ')' : '');
        }
        $place.text(text);
      }).fail(function (xhr) {
        $place.text(t('status.error') + errorText(xhr));
      });
    }

    this.callbacks = {
      render: function () { return true; },
      init: function () { return true; },
      bind_actions: function () { return true; },
      settings: function ($modal_body) {
        var $place = $('<div class="amosync-status"></div>');
        $modal_body.find('.widget_settings_block').append($place);
        showStatus($place);
        return true;
      },
      onSave: function () {
        var settings = self.get_settings();
        var deferred = $.Deferred();
        call('/widget', 'POST', {
          api_key: settings.api_key,
          email_types: settings.email_types || ''
        }).done(function () {
          deferred.resolve();
        }).fail(function (xhr) {
          // A rejected key must not be saved as if it worked.
          deferred.reject(t('status.error') + errorText(xhr));
        });
        return deferred.promise();
      },
      destroy: function () {
        call('/widget/disconnect', 'POST');
        return true;
      },
      contacts: { selected: function () { return true; } },
      leads: { selected: function () { return true; } }
    };
    return this;
  };
});
